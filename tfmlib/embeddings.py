"""Token embeddings: a lookup table that is the same as one-hot vectors times a matrix.

Shape legend: B batch, T sequence length, V vocabulary size, C d_model.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .utils import check_tensor

__all__ = ["TokenEmbedding"]


class TokenEmbedding(nn.Module):
    """Token ids (B, T) -> vectors (B, T, C).

    ``scale=True`` multiplies by sqrt(C), as in "Attention Is All You Need", and then
    starts the table at N(0, 1/C) as that paper does: the scaled vectors have entries of
    size ~1, like the sinusoidal table added next (|PE| <= 1). (A N(0, 1) table times sqrt(C)
    would make tokens ~sqrt(C) times larger than the positions, which they then barely move.)
    ``scale=False`` keeps PyTorch's N(0, 1) (models such as GPT re-initialise it themselves).
    """

    def __init__(self, vocab_size: int, d_model: int, scale: bool = True, padding_idx: int | None = None):
        super().__init__()
        if vocab_size < 1 or d_model < 1:
            raise ValueError(f"vocab_size and d_model must be positive, got {vocab_size} and {d_model}")
        self.vocab_size, self.d_model = vocab_size, d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = math.sqrt(d_model) if scale else 1.0
        if scale:
            with torch.no_grad():  # N(0, 1/C): entries of size ~1 after the sqrt(C) scaling
                self.embedding.weight.normal_(0.0, d_model ** -0.5)
                if padding_idx is not None:
                    self.embedding.weight[padding_idx].zero_()

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tensor(tokens, "tokens", ndim=(1, 2), dtype_kind="int")
        if tokens.device.type == "cpu" and tokens.numel():  # range check without a GPU sync
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.vocab_size - 1}], got ids from {lo} to {hi}")
        return self.embedding(tokens) * self.scale  # (B, T) -> (B, T, C)
