"""Checks for lesson 10's exercises on measuring a language model (``tfmlib.lm_metrics``): the
bigram cross-entropy a model must beat, and bits per character to compare tokenizers. Each runs
the learner's code against the reference on small streams and edge cases (unseen pairs, alpha,
the shortest stream) and names the usual mistake when the output matches it.

Shape legend: N ids in the training stream, M ids in the evaluation stream, V vocabulary size.
"""
from __future__ import annotations

import math

import torch

from ..lm_metrics import bigram_cross_entropy, bits_per_char
from .core import CheckFailed, call, check, expect_close

__all__ = ["check_bigram_cross_entropy", "check_bits_per_char",
           "HINT_BIGRAM_NO_SMOOTHING", "HINT_BIGRAM_DENOMINATOR", "HINT_BIGRAM_COLUMNS", "HINT_BIGRAM_REVERSED",
           "HINT_BIGRAM_ON_TRAIN", "HINT_BIGRAM_BITS", "HINT_BIGRAM_UNIGRAM", "HINT_NOT_A_NUMBER",
           "HINT_BPC_NO_LN2", "HINT_BPC_TIMES_LN2", "HINT_BPC_INVERTED", "HINT_BPC_NO_RATIO"]

HINT_BIGRAM_NO_SMOOTHING = ("add alpha to EVERY count (count(a, b) + alpha): a pair never seen in training must keep "
                            "a small probability, or one unseen pair makes the cross-entropy infinite.")
HINT_BIGRAM_DENOMINATOR = ("with alpha added to each of the V counts of a row, the row total grows by alpha * V: divide by "
                           "count(a, .) + alpha * V, so that every row sums to 1.")
HINT_BIGRAM_COLUMNS = ("normalise each ROW (the previous token a): p(b | a) = counts[a, b] / counts[a].sum(), i.e. "
                       "sum over dim=1, not dim=0.")
HINT_BIGRAM_REVERSED = ("the pairs are (previous, next) = (ids[:-1], ids[1:]): row = previous token, column = next token; "
                        "yours are reversed.")
HINT_BIGRAM_ON_TRAIN = "count on train_ids, but SCORE on eval_ids: the baseline must be measured on held-out text."
HINT_BIGRAM_BITS = "report nats (natural log, torch.log), like F.cross_entropy; you returned bits (log2)."
HINT_BIGRAM_UNIGRAM = ("that is the UNIGRAM cross-entropy (no context): condition on the previous token, "
                       "p(b | a) from the counts of pairs.")
HINT_NOT_A_NUMBER = "return one number (a float, or a 0-d tensor): the mean over all pairs."
HINT_BPC_NO_LN2 = "bits, not nats: divide by ln 2 (math.log(2)); 1 nat = 1.4427 bits."
HINT_BPC_TIMES_LN2 = "divide by ln 2 to turn nats into bits; you multiplied."
HINT_BPC_INVERTED = ("total cost of the text = loss x n_tokens (nats per token x tokens); per character: divide by "
                     "n_chars. Your ratio is upside down.")
HINT_BPC_NO_RATIO = ("a token may cover several characters: multiply the per-token loss by n_tokens / n_chars "
                     "before converting to bits.")


def _as_number(out, what: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return out.detach().double().reshape(())
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return torch.tensor(float(out), dtype=torch.float64)
    shape = f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else ""
    raise CheckFailed(f"{what}: expected one number, got {type(out).__name__}{shape}", HINT_NOT_A_NUMBER)


# ---------------------------------------------------------------- the bigram baseline

def _bigram_variant(train_ids, eval_ids, V, alpha, *, smooth=True, denominator="alpha_v", dim=1, reverse=False):
    """The usual wrong versions of the add-alpha bigram cross-entropy."""
    prev, nxt = (train_ids[1:], train_ids[:-1]) if reverse else (train_ids[:-1], train_ids[1:])
    counts = torch.bincount(prev * V + nxt, minlength=V * V).double().view(V, V)     # (V, V)
    numerator = counts + (alpha if smooth else 0.0)
    if denominator == "alpha_v":
        total = numerator.sum(dim=dim, keepdim=True)
    else:                                                                          # count(a, .) + alpha only
        total = counts.sum(dim=dim, keepdim=True) + alpha
    log_p = (numerator / total).log()
    return -log_p[eval_ids[:-1], eval_ids[1:]].mean()


def _bigram_cases():
    g = torch.Generator().manual_seed(10)
    structured = torch.randint(0, 6, (400,), generator=g)
    structured[1::2] = (structured[::2] * 2 + 1) % 6          # the next id depends on the previous one
    return [("a random stream of 6 symbols", torch.randint(0, 6, (300,), generator=g),
             torch.randint(0, 6, (80,), generator=g), 6, 1.0),
            ("a structured stream (V = 6)", structured[:300], structured[300:], 6, 1.0),
            ("alpha = 0.5 and a symbol never seen in training (V = 8)", torch.randint(0, 7, (200,), generator=g),
             torch.cat([torch.randint(0, 7, (30,), generator=g), torch.tensor([7, 3])]), 8, 0.5),
            ("the shortest eval stream: 2 ids", torch.randint(0, 5, (50,), generator=g), torch.tensor([4, 2]), 5, 1.0)]


@check("bigram_cross_entropy")
def check_bigram_cross_entropy(fn):
    """fn(train_ids (N,), eval_ids (M,), vocab_size, alpha) -> mean -log p(b | a) over the M - 1 eval pairs, nats."""
    n = 0
    for what, train_ids, eval_ids, V, alpha in _bigram_cases():
        expected = torch.tensor(bigram_cross_entropy(train_ids, eval_ids, V, alpha), dtype=torch.float64)
        out = _as_number(call(fn, train_ids.clone(), eval_ids.clone(), V, alpha), f"bigram_cross_entropy on {what}")
        if torch.isinf(out) or torch.isnan(out):
            raise CheckFailed(f"bigram_cross_entropy on {what}: got {out.item()}", HINT_BIGRAM_NO_SMOOTHING)
        counts = torch.bincount(train_ids, minlength=V).double() + alpha
        log_unigram = (counts / counts.sum()).log()
        mistakes = {HINT_BIGRAM_DENOMINATOR: _bigram_variant(train_ids, eval_ids, V, alpha, denominator="alpha"),
                    HINT_BIGRAM_COLUMNS: _bigram_variant(train_ids, eval_ids, V, alpha, dim=0),
                    HINT_BIGRAM_REVERSED: _bigram_variant(train_ids, eval_ids, V, alpha, reverse=True),
                    HINT_BIGRAM_ON_TRAIN: torch.tensor(bigram_cross_entropy(train_ids, train_ids, V, alpha)),
                    HINT_BIGRAM_BITS: expected / math.log(2),
                    HINT_BIGRAM_UNIGRAM: -log_unigram[eval_ids[1:]].mean(),
                    HINT_BIGRAM_UNIGRAM + " ": -log_unigram[eval_ids].mean(),      # scored on all M ids
                    HINT_BIGRAM_NO_SMOOTHING: _bigram_variant(train_ids, eval_ids, V, alpha, smooth=False)}
        expect_close(out, expected, f"bigram_cross_entropy on {what}",
                     mistakes={h: w.double() for h, w in mistakes.items()}, atol=1e-6, rtol=1e-6)
        n += 1
    return n


# ---------------------------------------------------------------- bits per character

@check("bits_per_char")
def check_bits_per_char(fn):
    """fn(loss_nats_per_token, n_tokens, n_chars) -> bits per character of the whole text."""
    cases = [("characters (one token per character)", 2.0, 1000, 1000),
             ("BPE, 1.9 characters per token", 3.6, 250_227, 475_760),
             ("GPT-2's tokenizer, 3.3 characters per token", 4.1, 30_000, 98_000)]
    ln2 = math.log(2)
    for what, loss, n_tokens, n_chars in cases:
        expected = torch.tensor(bits_per_char(loss, n_tokens, n_chars), dtype=torch.float64)
        out = _as_number(call(fn, loss, n_tokens, n_chars), f"bits_per_char on {what}")
        mistakes = {HINT_BPC_NO_LN2: loss * n_tokens / n_chars,
                    HINT_BPC_TIMES_LN2: loss * n_tokens / n_chars * ln2,
                    HINT_BPC_INVERTED: loss * n_chars / n_tokens / ln2,
                    HINT_BPC_NO_RATIO: loss / ln2}
        if n_tokens == n_chars:                    # the ratio mistakes cannot show on characters
            mistakes = {h: w for h, w in mistakes.items() if h in (HINT_BPC_NO_LN2, HINT_BPC_TIMES_LN2)}
        expect_close(out, expected, f"bits_per_char on {what}",
                     mistakes={h: torch.tensor(float(w), dtype=torch.float64) for h, w in mistakes.items()},
                     atol=1e-6, rtol=1e-6)
    return len(cases)
