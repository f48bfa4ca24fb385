"""The lesson-02 checks pass the reference, report stubs as not implemented, and fail
realistic wrong implementations with the hint meant for them."""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_fails, stub
import tfmlib.checks.tokens as tok
from tfmlib.checks.tokens import (check_cosine_similarity, check_count_pairs, check_embedding_lookup,
                                  check_merge_pair, check_train_bpe, reference_train_bpe)
from tfmlib.tokenizers import count_pairs, merge_pair


# --------------------------------------------------------------------------- count_pairs

def count_pairs_stride_two(ids):
    counts = {}
    for i in range(0, len(ids) - 1, 2):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def count_pairs_off_by_one(ids):
    counts = {}
    for i in range(len(ids) - 2):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def count_pairs_unordered(ids):
    counts = {}
    for a, b in zip(ids, ids[1:]):
        key = tuple(sorted((a, b)))
        counts[key] = counts.get(key, 0) + 1
    return counts


def count_pairs_presence(ids):
    return {pair: 1 for pair in zip(ids, ids[1:])}


def count_pairs_crashes_on_short(ids):
    counts = {(ids[0], ids[1]): 1}
    for pair in list(zip(ids, ids[1:]))[1:]:
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def count_pairs_returns_list(ids):
    return list(zip(ids, ids[1:]))


def test_count_pairs_reference_and_counter_pass():
    from collections import Counter
    assert check_count_pairs(count_pairs).passed
    assert check_count_pairs(lambda ids: Counter(zip(ids, ids[1:]))).passed


def test_count_pairs_stub():
    assert check_count_pairs(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (count_pairs_stride_two, "pairs may overlap"),
    (count_pairs_off_by_one, "the last pair is missing"),
    (count_pairs_unordered, "order matters"),
    (count_pairs_presence, "not only whether it occurs"),
    (count_pairs_crashes_on_short, "fewer than two ids has no pairs"),
    (count_pairs_returns_list, "return a dict"),
])
def test_count_pairs_mistakes(wrong, hint):
    assert_fails(check_count_pairs(wrong), hint)


# --------------------------------------------------------------------------- merge_pair

def merge_no_skip(ids, pair, new_id):
    return [new_id if tuple(ids[i:i + 2]) == pair else ids[i] for i in range(len(ids))]


def merge_right_to_left(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i > 0 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_as_text(ids, pair, new_id):
    text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
    return [int(t) for t in text.split()]


def merge_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def merge_returns_tuple(ids, pair, new_id):
    return tuple(merge_pair(ids, pair, new_id))


def test_merge_pair_reference_passes_and_stub():
    assert check_merge_pair(merge_pair).passed
    assert check_merge_pair(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (merge_no_skip, "jump over both"),
    (merge_right_to_left, "scan from left to right"),
    (merge_drops_last, "the last id went missing"),
    (merge_as_text, "'11 2' contains '1 2'"),
    (merge_in_place, "don't modify ids in place"),
    (merge_returns_tuple, "build and return a new list"),
])
def test_merge_pair_mistakes(wrong, hint):
    assert_fails(check_merge_pair(wrong), hint)


# --------------------------------------------------------------------------- train_bpe

def _train(text, n_merges, pick, first_id=256, update=True, min_count=2):
    ids, merges = list(text.encode("utf-8")), []
    for k in range(n_merges):
        counts = count_pairs(ids)
        if not counts:
            break
        best = pick(counts)
        if counts[best] < min_count:
            break
        merges.append(best)
        if update:
            ids = merge_pair(ids, best, first_id + k)
    return merges


def smallest(counts):
    return max(counts, key=lambda p: (counts[p], -p[0], -p[1]))


def train_first_seen_tie(text, n):
    return _train(text, n, lambda c: max(c, key=c.get))


def train_largest_tie(text, n):
    return _train(text, n, lambda c: max(c, key=lambda p: (c[p], p)))


def train_without_update(text, n):
    return _train(text, n, smallest, update=False)


def train_ids_from_255(text, n):
    return _train(text, n, smallest, first_id=255)


def train_never_stops(text, n):
    return _train(text, n, smallest, min_count=1)


def train_on_characters(text, n):  # ord() instead of UTF-8 bytes: differs on 'ï', 'é'
    ids, merges = [ord(ch) for ch in text], []
    for k in range(n):
        counts = count_pairs(ids)
        if not counts or counts[smallest(counts)] < 2:
            break
        merges.append(smallest(counts))
        ids = merge_pair(ids, merges[-1], 256 + k)
    return merges


def train_crashes_on_empty(text, n):
    ids, merges = list(text.encode("utf-8")), []
    for k in range(n):
        counts = count_pairs(ids)
        best = smallest(counts)  # max() of an empty dict raises ValueError
        if counts[best] < 2:
            break
        merges.append(best)
        ids = merge_pair(ids, best, 256 + k)
    return merges


def test_train_bpe_reference_passes_and_stub():
    assert check_train_bpe(reference_train_bpe).passed
    assert check_train_bpe(stub).status == "not implemented"
    assert reference_train_bpe("aaabdaaabac", 3) == [(97, 97), (97, 98), (256, 257)]


@pytest.mark.parametrize("wrong, hint", [
    (train_first_seen_tie, "take the smallest pair"),
    (train_largest_tie, "not the largest"),
    (train_without_update, "replace the pair in ids"),
    (train_ids_from_255, "new ids start at 256"),
    (train_never_stops, "occurs only once"),
    (train_on_characters, "not from ord()"),
    (train_crashes_on_empty, "no pair at all"),
])
def test_train_bpe_mistakes(wrong, hint):
    assert_fails(check_train_bpe(wrong), hint)


# --------------------------------------------------------------------------- embedding_lookup

def lookup_reference(ids, weight):
    return F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype) @ weight


def lookup_guesses_vocab(ids, weight):
    return F.one_hot(ids).float() @ weight


def lookup_scaled(ids, weight):
    return lookup_reference(ids, weight) * weight.shape[1] ** 0.5


def lookup_long_one_hot(ids, weight):
    return F.one_hot(ids, num_classes=weight.shape[0]) @ weight


def lookup_flattened(ids, weight):
    return F.one_hot(ids.reshape(-1), num_classes=weight.shape[0]).float() @ weight


def lookup_detached(ids, weight):
    return lookup_reference(ids, weight).detach()


def lookup_via_list(ids, weight):
    return torch.tensor([[weight[i].tolist() for i in row] for row in ids.reshape(-1, ids.shape[-1]).tolist()]
                        ).reshape(*ids.shape, weight.shape[1])


def test_embedding_lookup_reference_passes_and_stub():
    assert check_embedding_lookup(lookup_reference).passed
    assert check_embedding_lookup(lambda ids, w: w[ids]).passed
    assert check_embedding_lookup(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (lookup_guesses_vocab, "num_classes=weight.shape[0]"),
    (lookup_scaled, "no sqrt(C) scaling"),
    (lookup_long_one_hot, "F.one_hot gives integers"),
    (lookup_flattened, "wrong shape"),
    (lookup_detached, "avoid .detach()"),
    (lookup_via_list, "avoid .detach()"),
])
def test_embedding_lookup_mistakes(wrong, hint):
    assert_fails(check_embedding_lookup(wrong), hint)


# --------------------------------------------------------------------------- cosine_similarity

def cosine_reference(a, b):
    return F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).T


def cosine_dot_only(a, b):
    return a @ b.T


def cosine_one_norm(a, b):
    return (a / a.norm(dim=-1, keepdim=True)) @ b.T


def cosine_wrong_axis(a, b):
    return F.normalize(a, dim=0) @ F.normalize(b, dim=0).T


def cosine_squared_norm(a, b):
    return (a / (a * a).sum(-1, keepdim=True)) @ (b / (b * b).sum(-1, keepdim=True)).T


def cosine_elementwise(a, b):
    return F.cosine_similarity(a, b, dim=-1)


def cosine_unguarded(a, b):
    return (a / a.norm(dim=-1, keepdim=True)) @ (b / b.norm(dim=-1, keepdim=True)).T


def test_cosine_reference_passes_and_stub():
    assert check_cosine_similarity(cosine_reference).passed
    assert check_cosine_similarity(lambda a, b: F.cosine_similarity(a[:, None], b[None], dim=-1)).passed
    assert check_cosine_similarity(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (cosine_dot_only, "that is the dot product"),
    (cosine_one_norm, "normalise b as well"),
    (cosine_wrong_axis, "not each feature column"),
    (cosine_squared_norm, "not by the squared lengths"),
    (cosine_elementwise, "(N, C) @ (C, M) gives (N, M)"),
    (cosine_unguarded, "clamp the lengths"),
])
def test_cosine_mistakes(wrong, hint):
    assert_fails(check_cosine_similarity(wrong), hint)


# --------------------------------------------------------------------------- encode_bpe (issue 10, item 10)
def encode_good(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge_pair(ids, pair, 256 + k)
    return ids


def encode_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in reversed(list(enumerate(merges))):
        ids = merge_pair(ids, pair, 256 + k)
    return ids


def encode_ids_from_zero(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = merge_pair(ids, pair, k)
    return ids


def encode_characters(text, merges):
    ids = [ord(ch) for ch in text]
    for k, pair in enumerate(merges):
        ids = merge_pair(ids, pair, 256 + k)
    return ids


def encode_retrains(text, merges):  # learns merges on the text instead of replaying the given ones
    return encode_good(text, tok.reference_train_bpe(text, len(merges)))


def encode_endless(text, merges):
    ids = list(text.encode("utf-8"))
    k = 0
    while k < len(merges):  # forgets k += 1
        ids = merge_pair(ids, merges[k], 256 + k)
    return ids


def test_encode_bpe_reference_passes_and_stub():
    assert tok.check_encode_bpe(encode_good).passed
    assert tok.check_encode_bpe(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (encode_reversed, tok.ENCODE_ORDER),
    (encode_ids_from_zero, tok.ENCODE_IDS),
    (encode_characters, tok.ENCODE_BYTES),
    (encode_retrains, tok.ENCODE_RETRAIN),
])
def test_encode_bpe_mistakes(wrong, hint):
    assert_fails(tok.check_encode_bpe(wrong), hint)


def test_encode_bpe_endless_loop_gets_a_verdict(monkeypatch):
    import tfmlib.checks.core as core
    monkeypatch.setattr(core, "TIME_LIMIT_S", 0.5)
    assert_fails(tok.check_encode_bpe(encode_endless), "did not finish")
