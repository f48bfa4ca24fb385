"""Checks for lesson 11 (pretrained weights).

    check_wordpiece(wordpiece)              wordpiece(word, vocab dict) -> list of pieces
    check_sentence_embedding(fn)            fn(hidden (B, T, C), attention_mask (B, T) 0/1) -> (B, C) unit vectors
    check_split_c_attn(fn)                  fn(weight (C, 3C), bias (3C,)) -> [(W_q, b_q), (W_k, b_k), (W_v, b_v)],
                                            each W (C, C) in nn.Linear's (out, in) layout

Each compares with tfmlib's reference (tfmlib.wordpiece.wordpiece, the mean pooling of
tfmlib.pretrained.encode_sentences, tfmlib.pretrained's GPT-2 loader) and names the usual mistake
when the learner's output equals it. Shape legend: B batch, T tokens, C d_model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..wordpiece import wordpiece as _reference_wordpiece
from .core import CheckFailed, call, check, expect_close

__all__ = ["check_wordpiece", "check_sentence_embedding", "check_split_c_attn", "HINT_WP_SHORTEST",
           "HINT_WP_NO_HASHES", "HINT_WP_HASH_FIRST", "HINT_WP_PARTIAL_UNK", "HINT_SE_PADDING", "HINT_SE_NOT_UNIT",
           "HINT_SE_WRONG_AXIS", "HINT_SE_CLS", "HINT_QKV_NO_TRANSPOSE", "HINT_QKV_ORDER", "HINT_QKV_INTERLEAVED"]

HINT_WP_SHORTEST = ("take the LONGEST piece in the vocabulary first: start with end = len(word) and shrink it, "
                    "not the other way round.")
HINT_WP_NO_HASHES = "a piece that does not start the word is looked up with the '##' prefix ('##able', not 'able')."
HINT_WP_HASH_FIRST = "the first piece of a word has no '##' prefix; only the pieces after it do."
HINT_WP_PARTIAL_UNK = ("when some part of the word cannot be covered, the WHOLE word becomes ['[UNK]'], "
                       "not the pieces found so far plus '[UNK]'.")
HINT_SE_PADDING = ("average only the real tokens: multiply by the attention mask and divide by the number of "
                   "real tokens, not by T (padding must not count).")
HINT_SE_NOT_UNIT = "scale each sentence vector to length 1 (F.normalize(..., dim=-1)) after the mean."
HINT_SE_WRONG_AXIS = "normalise each ROW (one sentence, dim=-1), not each feature across the batch (dim=0)."
HINT_SE_CLS = "that is the first token's vector ([CLS] pooling); MiniLM was trained with the MEAN of the real tokens."
HINT_QKV_NO_TRANSPOSE = ("GPT-2's Conv1D stores (in, out) = (C, 3C); nn.Linear wants (out, in): transpose "
                         "(weight.t()) before cutting.")
HINT_QKV_ORDER = "c_attn's outputs are q | k | v, in that order."
HINT_QKV_INTERLEAVED = ("the three blocks are contiguous: outputs 0..C-1 are q, C..2C-1 are k, 2C..3C-1 are v "
                        "(not interleaved per feature).")


# ---------------------------------------------------------------- wordpiece
def _shortest_first(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def _variant(word, vocab, prefix_first=False, prefix_rest=True, partial_unk=False):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end]
            if (start > 0 and prefix_rest) or (start == 0 and prefix_first):
                piece = "##" + piece
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return pieces + ["[UNK]"] if partial_unk else ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


_VOCAB = {p: i for i, p in enumerate(["[UNK]", "un", "una", "##aff", "##a", "##ff", "##able", "##ab", "##le",
                                      "aff", "able", "a", "##f", "##x", "play", "##ing", "##in", "##g", "p",
                                      "##l", "##ay", "x", "##un"])}
_WORDS = ["unaffable", "playing", "able", "a", "x", "unx", "playq", "qplay", "affable", "unaffablex", "ununa"]


@check("wordpiece")
def check_wordpiece(fn) -> int:
    mistakes = [(HINT_WP_SHORTEST, _shortest_first), (HINT_WP_NO_HASHES, lambda w, v: _variant(w, v, prefix_rest=False)),
                (HINT_WP_HASH_FIRST, lambda w, v: _variant(w, v, prefix_first=True)),
                (HINT_WP_PARTIAL_UNK, lambda w, v: _variant(w, v, partial_unk=True))]
    outputs = {}
    for word in _WORDS:
        out = call(fn, word, dict(_VOCAB))
        if not isinstance(out, list) or not all(isinstance(p, str) for p in out):
            raise CheckFailed(f"wordpiece({word!r}): expected a list of strings, got {out!r}",
                              "return the pieces as a list, e.g. ['un', '##aff', '##able'].")
        outputs[word] = out
    for word in _WORDS:
        expected = _reference_wordpiece(word, _VOCAB)
        if outputs[word] != expected:   # the hint of the mistake that explains every output
            hints = [hint for hint, wrong in mistakes if all(outputs[w] == wrong(w, _VOCAB) for w in _WORDS)]
            raise CheckFailed(f"wordpiece({word!r}) = {outputs[word]}, expected {expected}",
                              hints[0] if hints else None)
    return len(_WORDS)


# ---------------------------------------------------------------- sentence embedding
def _cases():
    g = torch.Generator().manual_seed(3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    return [("a (3, 5, 8) batch with padding", torch.randn(3, 5, 8, generator=g) + 0.5, mask),
            ("one sentence, T = 1", torch.randn(1, 1, 4, generator=g), torch.ones(1, 1, dtype=torch.long)),
            ("a boolean mask", torch.randn(2, 4, 6, generator=g) * 3, torch.tensor([[True, True, False, False],
                                                                                   [True, True, True, True]]))]


@check("sentence_embedding")
def check_sentence_embedding(fn) -> int:
    for what, hidden, mask in _cases():
        w = mask.to(hidden.dtype).unsqueeze(-1)                       # (B, T, 1)
        mean = (hidden * w).sum(1) / w.sum(1)                         # (B, C)
        mistakes = {HINT_SE_PADDING: F.normalize(hidden.mean(1), dim=-1), HINT_SE_NOT_UNIT: mean,
                    HINT_SE_WRONG_AXIS: F.normalize(mean, dim=0), HINT_SE_CLS: F.normalize(hidden[:, 0], dim=-1)}
        out = call(fn, hidden.clone(), mask.clone())
        expect_close(out, F.normalize(mean, dim=-1), f"embeddings of {what}", mistakes=mistakes)
    return 3


# ---------------------------------------------------------------- GPT-2's fused c_attn
@check("split_c_attn")
def check_split_c_attn(fn) -> int:
    for C in (4, 6):
        g = torch.Generator().manual_seed(C)
        weight, bias = torch.randn(C, 3 * C, generator=g), torch.randn(3 * C, generator=g)
        out = call(fn, weight.clone(), bias.clone())
        if not (isinstance(out, (list, tuple)) and len(out) == 3 and all(len(p) == 2 for p in out)):
            raise CheckFailed(f"expected three (weight, bias) pairs, got {type(out).__name__}",
                              "return [(W_q, b_q), (W_k, b_k), (W_v, b_v)].")
        right = [(weight.t()[k * C:(k + 1) * C], bias[k * C:(k + 1) * C]) for k in range(3)]
        interleaved = weight.t().reshape(C, 3, C)                    # (3C, C) -> (C, 3, C): the wrong reading
        names = ("q", "k", "v")
        for k, ((w, b), (w_ref, b_ref)) in enumerate(zip(out, right)):
            mistakes = {HINT_QKV_NO_TRANSPOSE: weight[:, k * C:(k + 1) * C], HINT_QKV_INTERLEAVED: interleaved[:, k]}
            if k < 2:
                mistakes[HINT_QKV_ORDER] = right[1 - k][0]           # q and k swapped
            expect_close(w, w_ref, f"W_{names[k]} for C = {C}", mistakes=mistakes)
            expect_close(b, b_ref, f"b_{names[k]} for C = {C}",
                         mistakes={HINT_QKV_INTERLEAVED: bias.reshape(C, 3)[:, k]})
    return 2
