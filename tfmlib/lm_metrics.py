"""Baselines a language model must beat, and a unit that compares tokenizers.

    unigram_cross_entropy(train_ids, val_ids, V)   # nats per token: p(x) from counts, no context
    bigram_cross_entropy(train_ids, val_ids, V)    # nats per token: p(x_t | x_{t-1}) from counts
    bits_per_char(loss, n_tokens, n_chars)         # nats per token -> bits per character

Both baselines count on the training ids with add-``alpha`` (Laplace) smoothing, so a pair never
seen in training still has a probability, and score the held-out ids: H = -mean log p. A model that
does not beat the bigram cross-entropy of its own text has learned no more than pairs of tokens.

Bits per character: a loss in nats per token depends on the tokenizer (a BPE token covers several
characters, so its loss is larger). The cost of the whole text, loss x n_tokens nats, divided by its
characters and by ln 2, is in bits per character whatever the tokenizer: comparable.

Shape legend: N ids in a stream, V vocabulary size.
"""
from __future__ import annotations

import math

import torch

from .utils import check_tensor

__all__ = ["unigram_cross_entropy", "bigram_cross_entropy", "bits_per_char"]


def _check_ids(ids: torch.Tensor, name: str, vocab_size: int, min_len: int) -> torch.Tensor:
    check_tensor(ids, name, ndim=1, dtype_kind="int")
    if ids.numel() < min_len:
        raise ValueError(f"{name} needs at least {min_len} ids, got {ids.numel()}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size - 1}], got ids from {int(ids.min())} to {int(ids.max())}")
    return ids.long()


def unigram_cross_entropy(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int,
                          alpha: float = 1.0) -> float:
    """Cross-entropy (nats per token) on eval_ids (N,) of p(x) = (count(x) + alpha) / (N_train + alpha V)."""
    train_ids = _check_ids(train_ids, "train_ids", vocab_size, 1)
    eval_ids = _check_ids(eval_ids, "eval_ids", vocab_size, 1)
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + alpha      # (V,)
    log_p = (counts / counts.sum()).log()
    return float(-log_p[eval_ids].mean())


def bigram_cross_entropy(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int,
                         alpha: float = 1.0) -> float:
    """Cross-entropy (nats per token) on the N - 1 pairs of eval_ids (N,) of
    p(b | a) = (count(a, b) + alpha) / (count(a, .) + alpha V), counted on train_ids."""
    train_ids = _check_ids(train_ids, "train_ids", vocab_size, 2)
    eval_ids = _check_ids(eval_ids, "eval_ids", vocab_size, 2)
    pair_index = train_ids[:-1] * vocab_size + train_ids[1:]                       # (N-1,) flat (a, b)
    counts = torch.bincount(pair_index, minlength=vocab_size * vocab_size).double()
    counts = counts.view(vocab_size, vocab_size) + alpha                           # (V, V): row a, column b
    log_p = (counts / counts.sum(dim=1, keepdim=True)).log()                       # each row sums to 1
    return float(-log_p[eval_ids[:-1], eval_ids[1:]].mean())


def bits_per_char(loss_nats_per_token: float, n_tokens: int, n_chars: int) -> float:
    """loss x n_tokens / (n_chars x ln 2): the same text's cost in bits per character."""
    if n_tokens < 1 or n_chars < 1:
        raise ValueError(f"n_tokens and n_chars must be positive, got {n_tokens} and {n_chars}")
    return float(loss_nats_per_token) * n_tokens / (n_chars * math.log(2))
