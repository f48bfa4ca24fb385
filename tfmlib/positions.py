"""Positional information: sinusoidal and learned encodings (added to the token
vectors, not concatenated), and rotary position embeddings (RoPE).

Shape legend: B batch, T sequence length, C d_model, H heads, hs head size.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .utils import check_tensor

__all__ = ["sinusoidal_encoding", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
           "rope_cache", "apply_rope"]


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """(max_len, C) table, interleaved: PE[p, 2i] = sin(p / base^(2i/C)), PE[p, 2i+1] = cos(same)."""
    if d_model % 2:
        raise ValueError(f"sinusoidal encoding needs an even d_model, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float32)[:, None]        # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)               # (C/2,)
    angle = position / base ** (two_i / d_model)                           # (T, C/2)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angle)  # even features: sine
    pe[:, 1::2] = torch.cos(angle)  # odd features: cosine
    return pe


class _AddPositions(nn.Module):
    """Shared forward: x (B, T, C) + table[:T], then dropout. Raises if T > max_len."""

    def __init__(self, max_len: int, d_model: int, dropout: float):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.dropout = nn.Dropout(dropout)

    def table(self) -> torch.Tensor:  # (max_len, C)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=3, last_dim=self.d_model, dtype_kind="float")
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds the positional table's max_len={self.max_len}")
        return self.dropout(x + self.table()[:T])  # (B, T, C) + (T, C) -> (B, T, C)


class SinusoidalPositionalEncoding(_AddPositions):
    """Adds the fixed sinusoidal table (no parameters)."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__(max_len, d_model, dropout)
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)

    def table(self) -> torch.Tensor:
        return self.pe


class LearnedPositionalEmbedding(_AddPositions):
    """Adds a learned vector per position (as in GPT-2 and BERT)."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__(max_len, d_model, dropout)
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def table(self) -> torch.Tensor:
        return self.weight


def rope_cache(max_len: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_len, hs), for ``apply_rope`` (rotate-half layout)."""
    if head_size % 2:
        raise ValueError(f"RoPE needs an even head size, got {head_size}")
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
    angle = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq                     # (T, hs/2)
    angle = torch.cat([angle, angle], dim=-1)                                                  # (T, hs)
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Rotate each pair (x_j, x_{j+hs/2}) of x (..., T, hs) by the angle of its position.

    After rotation, q_m . k_n depends on the positions only through m - n.
    """
    T, hs = x.shape[-2], x.shape[-1]
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if offset + T > cos.shape[0]:
        raise ValueError(f"positions up to {offset + T} exceed the RoPE table's length {cos.shape[0]}")
    if hs != cos.shape[-1]:
        raise ValueError(f"x has head size {hs} but the RoPE table was built for {cos.shape[-1]}")
    cos, sin = cos[offset:offset + T], sin[offset:offset + T]  # (T, hs)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)                     # (..., T, hs)
    return x * cos + rotated * sin
