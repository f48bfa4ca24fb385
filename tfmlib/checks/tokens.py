"""Checks for lesson 02, tokens and embeddings: one BPE step (count_pairs, merge_pair),
BPE training, encoding with learned merges (encode_bpe), the embedding lookup as a one-hot product, and cosine similarity.

Shape legend: V vocabulary size, C embedding width, B batch, T tokens, N and M vectors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..tokenizers import count_pairs, merge_pair
from .core import CheckFailed, call, check, expect_close, grad_of

__all__ = ["check_count_pairs", "check_merge_pair", "check_train_bpe", "check_encode_bpe", "check_embedding_lookup",
           "check_cosine_similarity", "reference_train_bpe", "reference_encode_bpe"]


def _expect_equal(actual, expected, what: str, mistakes: dict | None = None, hint: str | None = None):
    """Exact comparison for lists and dicts; ``mistakes`` maps a hint to a typical wrong answer."""
    if actual == expected:
        return
    for mistake_hint, wrong in (mistakes or {}).items():
        if actual == wrong:
            raise CheckFailed(f"{what}: expected {_short(expected)}, got {_short(actual)}", mistake_hint)
    raise CheckFailed(f"{what}: expected {_short(expected)}, got {_short(actual)}", hint)


def _short(value, limit: int = 90) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _call_with_hint(fn, *args, crash_hint: str | None = None):
    """call(), giving ``crash_hint`` (when given) if the learner's code raises on this case."""
    try:
        return call(fn, *args)
    except CheckFailed as e:
        raise CheckFailed(e.message, crash_hint or e.hint) from None


# --------------------------------------------------------------------------- count_pairs

@check("count_pairs")
def check_count_pairs(fn):
    """fn(ids: list[int]) -> dict {(a, b): count} over adjacent, overlapping pairs."""
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("ids [1, 2, 1, 2, 1, 2, 3]", [1, 2, 1, 2, 1, 2, 3]),
        ("ids [5, 5, 5] (overlapping pairs)", [5, 5, 5]),
        ("ids [3, 4, 4, 3]", [3, 4, 4, 3]),
        ("40 random ids", torch.randint(0, 6, (40,), generator=gen).tolist()),
        ("a single id [7]", [7]),
        ("an empty list", []),
    ]
    for what, ids in cases:
        original = list(ids)
        short = "a list with fewer than two ids has no pairs: return {}." if len(ids) < 2 else None
        got = _call_with_hint(fn, list(ids), crash_hint=short)
        if not isinstance(got, dict):
            raise CheckFailed(f"{what}: expected a dict {{(a, b): count}}, got {type(got).__name__}",
                              "return a dict that maps each pair (a, b) to how often it occurs.")
        expected = count_pairs(original)
        pairs = list(zip(original, original[1:]))
        every_other = {}  # stepping i by 2 counts only pairs that do not overlap
        for i in range(0, len(original) - 1, 2):
            pair = (original[i], original[i + 1])
            every_other[pair] = every_other.get(pair, 0) + 1
        mistakes = {
            "count every position i with (ids[i], ids[i+1]); pairs may overlap: [5, 5, 5] holds (5, 5) twice.":
                every_other,
            "the last pair is missing: loop i over range(len(ids) - 1), or use zip(ids, ids[1:]).":
                count_pairs(original[:-1]),
            "order matters: (a, b) and (b, a) are different pairs.":
                _unordered_counts(pairs),
            "count how often each pair occurs, not only whether it occurs.":
                {p: 1 for p in pairs},
        }
        _expect_equal(dict(got), expected, what, mistakes)
    return len(cases)


def _unordered_counts(pairs):
    counts = {}
    for a, b in pairs:
        key = (min(a, b), max(a, b))
        counts[key] = counts.get(key, 0) + 1
    return counts


# --------------------------------------------------------------------------- merge_pair

def _merge_without_skip(ids, pair, new_id):
    return [new_id if tuple(ids[i:i + 2]) == pair else ids[i] for i in range(len(ids))]


def _merge_right_to_left(ids, pair, new_id):
    return merge_pair(ids[::-1], pair[::-1], new_id)[::-1]


@check("merge_pair")
def check_merge_pair(fn):
    """fn(ids, pair, new_id) -> a new list with each occurrence of pair replaced, left to right."""
    cases = [
        ("merging (1, 2) in [1, 2, 3, 1, 2]", [1, 2, 3, 1, 2], (1, 2)),
        ("merging (5, 5) in [5, 5, 5] (overlap)", [5, 5, 5], (5, 5)),
        ("merging (5, 5) in [5, 5, 5, 5]", [5, 5, 5, 5], (5, 5)),
        ("merging (1, 2) in [11, 2, 1, 3] (no match)", [11, 2, 1, 3], (1, 2)),
        ("merging (3, 4) in [1, 3, 4]", [1, 3, 4], (3, 4)),
        ("merging (4, 1) in [3, 4]", [3, 4], (4, 1)),
        ("merging (1, 2) in [1]", [1], (1, 2)),
        ("merging (1, 2) in []", [], (1, 2)),
    ]
    new_id = 99
    for what, ids, pair in cases:
        given = list(ids)
        short = "a list of 0 or 1 ids has nothing to merge: return a copy of it." if len(ids) < 2 else None
        got = _call_with_hint(fn, given, pair, new_id, crash_hint=short)
        if not isinstance(got, list):
            raise CheckFailed(f"{what}: expected a list of ids, got {type(got).__name__}",
                              "build and return a new list (strings or tuples won't do).")
        expected = merge_pair(ids, pair, new_id)
        mistakes = {
            "after merging ids[i] and ids[i+1], jump over both (i += 2); otherwise the second id is kept too.":
                _merge_without_skip(ids, pair, new_id),
            "scan from left to right: in [5, 5, 5] the FIRST two 5s merge, giving [99, 5].":
                _merge_right_to_left(ids, pair, new_id),
            "the last id went missing: when it is not part of a pair, keep it.":
                expected[:-1],
            "work on the ids, not on their text: '11 2' contains '1 2', yet 11 is not 1.":
                _merge_as_text(ids, pair, new_id),
        }
        _expect_equal(got, expected, what, mistakes)
        if given != ids:
            raise CheckFailed(f"{what}: your function changed its input list to {_short(given)}",
                              "don't modify ids in place: build and return a new list.")
    return len(cases)


def _merge_as_text(ids, pair, new_id):
    text = " " + " ".join(map(str, ids)) + " "
    text = text.replace(f"{pair[0]} {pair[1]}", str(new_id))
    return [int(t) for t in text.split()]


# --------------------------------------------------------------------------- train_bpe

def reference_train_bpe(text: str, n_merges: int) -> list[tuple[int, int]]:
    """Merges learned on the UTF-8 bytes of ``text`` (no pre-tokenization): merge k makes id 256 + k.
    The most frequent pair wins, ties go to the smallest pair; stop when no pair occurs twice."""
    ids, merges = list(text.encode("utf-8")), []
    for k in range(n_merges):
        counts = count_pairs(ids)
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        if counts[best] < 2:
            break
        merges.append(best)
        ids = merge_pair(ids, best, 256 + k)
    return merges


def _train_variant(text, n_merges, tie="smallest", first_id=256, update=True, min_count=2, as_bytes=True):
    ids = list(text.encode("utf-8")) if as_bytes else [ord(ch) for ch in text]
    merges = []
    for k in range(n_merges):
        counts = count_pairs(ids)
        if not counts:
            break
        if tie == "smallest":
            best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        elif tie == "largest":
            best = max(counts, key=lambda p: (counts[p], p))
        else:  # the first pair met in the text: what max(counts, key=counts.get) gives
            best = max(counts, key=counts.get)
        if counts[best] < min_count:
            break
        merges.append(best)
        if update:
            ids = merge_pair(ids, best, first_id + k)
    return merges


@check("train_bpe")
def check_train_bpe(fn):
    """fn(text, n_merges) -> list of merged pairs; merge k creates id 256 + k."""
    cases = [
        ("'ab ba ab ba cd cd', 6 merges (ties)", "ab ba ab ba cd cd", 6),
        ("'aaabdaaabac', 3 merges", "aaabdaaabac", 3),
        ("'low lower lowest newest widest', 10 merges", "low lower lowest newest widest", 10),
        ("'abcd', 5 merges (no pair occurs twice)", "abcd", 5),
        ("'hello', 0 merges", "hello", 0),
        ("'zz', 2 merges", "zz", 2),
        ("'', 3 merges", "", 3),
        ("'naïve café naïve café', 4 merges (multi-byte characters)", "naïve café naïve café", 4),
    ]
    for what, text, n in cases:
        short = "a text this short may have no pair at all: stop and return the merges so far." if len(text) < 3 else None
        got = _call_with_hint(fn, text, n, crash_hint=short)
        if not isinstance(got, list):
            raise CheckFailed(f"{what}: expected a list of pairs, got {type(got).__name__}",
                              "return the list of merged pairs, in the order they were learned.")
        got = [tuple(p) if isinstance(p, (list, tuple)) else p for p in got]
        expected = reference_train_bpe(text, n)
        mistakes = {
            "ties: when several pairs are equally frequent, take the smallest pair (a, b), "
            "e.g. max(counts, key=lambda p: (counts[p], -p[0], -p[1])).":
                _train_variant(text, n, tie="first"),
            "ties go to the SMALLEST pair, not the largest.": _train_variant(text, n, tie="largest"),
            "after each merge, replace the pair in ids with merge_pair before counting again.":
                _train_variant(text, n, update=False),
            "new ids start at 256 (ids 0-255 are the bytes): merge k creates 256 + k.":
                _train_variant(text, n, first_id=255),
            "stop when the most frequent pair occurs only once: merging it learns nothing reusable.":
                _train_variant(text, n, min_count=1),
            "start from the UTF-8 bytes, list(text.encode('utf-8')), not from ord() of each character.":
                _train_variant(text, n, as_bytes=False),
        }
        _expect_equal(got, expected, what, mistakes)
    return len(cases)


# --------------------------------------------------------------------------- encode_bpe

def reference_encode_bpe(text: str, merges, order=None, new_id=lambda k: 256 + k, as_bytes: bool = True) -> list[int]:
    """UTF-8 bytes of ``text``, then every learned merge in the order it was learned (merge k -> id 256 + k).
    ``order``/``new_id``/``as_bytes`` only exist to reproduce the usual mistakes."""
    ids = list(text.encode("utf-8")) if as_bytes else [ord(ch) for ch in text]
    ranked = list(enumerate(merges))
    for k, pair in (ranked[::-1] if order == "reversed" else ranked):
        ids = merge_pair(ids, tuple(pair), new_id(k))
    return ids


ENCODE_ORDER = ("apply the merges in the order they were learned: merge k may build on ids made by earlier "
                "merges (e.g. (256, 257)), so it can only match after them.")
ENCODE_IDS = "merge k creates the id 256 + k: use enumerate(merges) to know k."
ENCODE_BYTES = "start from the UTF-8 bytes, list(text.encode('utf-8')), as training did; not from ord() of each character."
ENCODE_RETRAIN = ("do not count pairs or learn new merges here: encoding only replays the merges it is given, "
                  "in their order, even if another pair is more frequent in this text.")


@check("encode_bpe")
def check_encode_bpe(fn):
    """fn(text, merges) -> list of ids: UTF-8 bytes, then each merge in order (merge k -> 256 + k)."""
    train = "aaabdaaabac"
    cases = [
        ("'aaabdaaabac' with the merges learned on it", train, reference_train_bpe(train, 3)),
        ("a new text 'abaab aac' with the same merges", "abaab aac", reference_train_bpe(train, 3)),
        ("'low lower lowest' with merges learned on other words",
         "low lower lowest", reference_train_bpe("slow slower slowest newest widest lowly", 8)),
        ("'naïve café' (multi-byte characters)", "naïve café", reference_train_bpe("naïve café naïve café", 4)),
        ("no merges at all", "hello", []),
        ("an empty text", "", reference_train_bpe(train, 3)),
    ]
    for what, text, merges in cases:
        got = _call_with_hint(fn, text, [tuple(p) for p in merges])
        if not isinstance(got, list):
            raise CheckFailed(f"{what}: expected a list of ids, got {type(got).__name__}",
                              "return the list of ids after applying every merge.")
        mistakes = {ENCODE_ORDER: reference_encode_bpe(text, merges, order="reversed"),
                    ENCODE_IDS: reference_encode_bpe(text, merges, new_id=lambda k: k),
                    ENCODE_BYTES: reference_encode_bpe(text, merges, as_bytes=False),
                    ENCODE_RETRAIN: reference_encode_bpe(text, reference_train_bpe(text, len(merges)))}
        mistakes[ENCODE_IDS + " (not 256 for every merge)"] = reference_encode_bpe(text, merges, new_id=lambda k: 256)
        expected = reference_encode_bpe(text, merges)
        _expect_equal(got, expected, what, {h: w for h, w in mistakes.items() if w != expected})
    return len(cases)


# --------------------------------------------------------------------------- embedding_lookup

@check("embedding_lookup")
def check_embedding_lookup(fn):
    """fn(ids (...,) long, weight (V, C)) -> (..., C), computed as one_hot(ids) @ weight."""
    cases = [("ids (2, 5), weight (10, 4)", torch.randint(0, 10, (2, 5)), torch.randn(10, 4)),
             ("ids (1, 1), weight (7, 3) (batch of one, T = 1)", torch.tensor([[6]]), torch.randn(7, 3)),
             ("ids (6,) without a batch axis, weight (9, 5)", torch.tensor([0, 2, 2, 1, 0, 2]), torch.randn(9, 5)),
             ("ids (3, 4) with repeats, weight (12, 8)", torch.randint(0, 4, (3, 4)), torch.randn(12, 8))]
    for what, ids, weight in cases:
        C = weight.shape[1]
        try:
            got = call(fn, ids.clone(), weight.clone())
        except CheckFailed as e:
            hint = e.hint
            if "cannot be multiplied" in e.message or "mat1 and mat2" in e.message:
                hint = ("F.one_hot(ids) guesses the vocabulary size from the largest id: pass "
                        "num_classes=weight.shape[0].")
            elif "dtype" in e.message:
                hint = "F.one_hot gives integers (long): convert with .to(weight.dtype) before the product."
            raise CheckFailed(f"{what}: {e.message}", hint) from None
        expected = weight[ids]  # (..., C)
        expect_close(got, expected, f"output for {what}", mistakes={
            "no sqrt(C) scaling here: that is TokenEmbedding's option, not part of the lookup.":
                expected * C ** 0.5,
        })
        grad_weight, = grad_of(lambda w: fn(ids, w), weight)
        if grad_weight is None:
            raise CheckFailed(f"{what}: no gradient reached weight",
                              "keep the computation in torch (no .detach(), .tolist() or torch.tensor(...)).")
        expected_grad, = grad_of(lambda w: w[ids], weight)
        expect_close(grad_weight, expected_grad, f"gradient with respect to weight for {what}",
                     hint="each id's row should receive the sum of the gradients of its positions.")
    return len(cases)


# --------------------------------------------------------------------------- cosine_similarity

def _reference_cosine(a, b, eps: float = 1e-8):
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp(min=eps)  # (N, C)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp(min=eps)  # (M, C)
    return a_unit @ b_unit.T  # (N, M)


@check("cosine_similarity")
def check_cosine_similarity(fn):
    """fn(a (N, C), b (M, C)) -> (N, M) with entry [i, j] = cos(a_i, b_j)."""
    a = torch.randn(4, 6) * torch.tensor([[0.5], [1.0], [3.0], [8.0]])  # vectors of different lengths
    b = torch.randn(3, 6) * torch.tensor([[2.0], [0.2], [5.0]])
    cases = [("a (4, 6), b (3, 6)", a, b),
             ("a (1, 6), b (3, 6) (one query)", a[:1], b),
             ("a (4, 6), b (4, 6) (square)", a, torch.randn(4, 6) * 4),
             ("a (2, 3), b (2, 3) with parallel vectors", torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 0.0]]),
              torch.tensor([[2.0, 4.0, 4.0], [0.0, -1.0, 0.0]]))]
    for what, x, y in cases:
        got = _call_with_hint(fn, x.clone(), y.clone(), crash_hint=None if len(x) == len(y) else
                              "compare every a_i with every b_j: (N, C) @ (C, M) gives (N, M).")
        expected = _reference_cosine(x, y)
        x_norm, y_norm = x.norm(dim=-1, keepdim=True), y.norm(dim=-1, keepdim=True)
        expect_close(got, expected, f"output for {what}", mistakes={
            "that is the dot product: divide by both lengths, ||a_i|| * ||b_j||.": x @ y.T,
            "normalise b as well as a.": (x / x_norm) @ y.T,
            "normalise a as well as b.": x @ (y / y_norm).T,
            "normalise each vector (a row, dim=-1), not each feature column (dim=0).":
                F.normalize(x, dim=0) @ F.normalize(y, dim=0).T,
            "divide by the lengths ||a||, not by the squared lengths ||a||^2.": (x / x_norm ** 2) @ (y / y_norm ** 2).T,
        })
    zero = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    got = call(fn, zero, zero)
    expect_close(got, _reference_cosine(zero, zero), "output when a vector is all zeros",
                 hint="a zero vector has length 0: clamp the lengths, e.g. .clamp(min=1e-8), so its cosine is 0, not NaN.")
    return len(cases) + 1
