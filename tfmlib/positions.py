"""Positional information: sinusoidal and learned encodings (added to the token
vectors, not concatenated), and rotary position embeddings (RoPE).

Shape legend: B batch, T sequence length, C d_model, H heads, hs head size.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .utils import check_tensor

__all__ = ["sinusoidal_encoding", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
           "rope_cache", "apply_rope", "RotaryEmbedding", "ROPE_PAIRINGS"]


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


ROPE_PAIRINGS = ("half", "interleaved")


def _check_pairing(pairing: str) -> None:
    if pairing not in ROPE_PAIRINGS:
        raise ValueError(f"RoPE pairing must be one of {ROPE_PAIRINGS}, got {pairing!r}")


def rope_cache(max_len: int, head_size: int, base: float = 10000.0,
               pairing: str = "half") -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_len, hs), for ``apply_rope``.

    Pair k (k = 0 .. hs/2 - 1) turns by the angle p * base^(-2k/hs) at position p. Two layouts
    store the same angles: ``pairing="half"`` (the default; Hugging Face's Llama, GPT-NeoX) pairs
    feature k with k + hs/2, ``pairing="interleaved"`` (the RoFormer paper, Meta's original Llama
    code, GPT-J) pairs neighbours 2k and 2k + 1. Raises ValueError for an odd head size or an
    unknown pairing.
    """
    if head_size % 2:
        raise ValueError(f"RoPE needs an even head size, got {head_size}")
    _check_pairing(pairing)
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
    angle = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq                     # (T, hs/2)
    if pairing == "half":
        angle = torch.cat([angle, angle], dim=-1)                                              # (T, hs): k, k + hs/2
    else:
        angle = angle.repeat_interleave(2, dim=-1)                                             # (T, hs): 2k, 2k + 1
    return angle.cos(), angle.sin()


def _rotate_pairs(x: torch.Tensor, pairing: str) -> torch.Tensor:
    """The partner of each feature, with the sign of a 90-degree turn: (a, b) -> (-b, a) per pair."""
    if pairing == "half":
        half = x.shape[-1] // 2
        return torch.cat([-x[..., half:], x[..., :half]], dim=-1)      # (..., hs)
    even, odd = x[..., 0::2], x[..., 1::2]                              # (..., hs/2) each
    return torch.stack([-odd, even], dim=-1).flatten(-2)                # (..., hs/2, 2) -> (..., hs)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, offset: int = 0,
               pairing: str = "half", positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each feature pair of x (..., T, hs) by the angle of its position.

    The positions are ``offset .. offset + T - 1``, or ``positions``: integer ids of shape (T,) or
    (B, T) (for x of shape (B, H, T, hs)), e.g. after left padding. ``pairing`` must be the one the
    tables were built with (see ``rope_cache``). After rotation, q_m . k_n depends on the positions
    only through m - n. Raises ValueError for positions outside [0, len(table)).
    """
    T, hs = x.shape[-2], x.shape[-1]
    _check_pairing(pairing)
    if hs != cos.shape[-1]:
        raise ValueError(f"x has head size {hs} but the RoPE table was built for {cos.shape[-1]}")
    if positions is None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if offset + T > cos.shape[0]:
            raise ValueError(f"positions up to {offset + T} exceed the RoPE table's length {cos.shape[0]}")
        cos, sin = cos[offset:offset + T], sin[offset:offset + T]  # (T, hs)
    else:
        cos, sin = _gather_angles(cos, sin, positions, T)
    if pairing == "half":  # the same sum, in fewer kernels: roll gives (x2, x1), the sign moves into sin
        half = hs // 2
        signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)   # (T, hs) or (B, 1, T, hs)
        return x * cos + x.roll(half, dims=-1) * signed_sin
    return x * cos + _rotate_pairs(x, pairing) * sin


def _gather_angles(cos, sin, positions, T):
    """cos/sin rows of ``positions`` (T,) -> (T, hs), or (B, T) -> (B, 1, T, hs) (one row per head)."""
    if positions.dtype.is_floating_point or positions.dtype == torch.bool:
        raise TypeError(f"positions must hold integer ids, got dtype {positions.dtype}")
    if positions.shape[-1] != T or positions.dim() not in (1, 2):
        raise ValueError(f"positions must have shape (T,) or (B, T) with T = {T}, got {tuple(positions.shape)}")
    if positions.device.type == "cpu" and positions.numel():  # range check without a GPU sync
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0 or hi >= cos.shape[0]:
            raise ValueError(f"positions must lie in [0, {cos.shape[0] - 1}] (the RoPE table's length is "
                             f"{cos.shape[0]}), got positions from {lo} to {hi}")
    cos, sin = cos[positions], sin[positions]                  # (T, hs) or (B, T, hs)
    if positions.dim() == 2:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)          # (B, T, hs) -> (B, 1, T, hs)
    return cos, sin


class RotaryEmbedding(nn.Module):
    """RoPE as a module that attention applies to its queries and keys (no parameters).

        rope = RotaryEmbedding(head_size=16, max_len=128)            # pairing="half" by default
        q = rope(q, positions)      # q (B, H, T, hs); positions (T,) or (B, T) ids, default 0 .. T-1

    One instance can be shared by every attention layer of a model. Raises ValueError for an odd
    head size, an unknown pairing, or positions outside [0, max_len).
    """

    def __init__(self, head_size: int, max_len: int = 512, base: float = 10000.0, pairing: str = "half"):
        super().__init__()
        _check_pairing(pairing)
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        self.head_size, self.max_len, self.base, self.pairing = head_size, max_len, base, pairing
        cos, sin = rope_cache(max_len, head_size, base, pairing)
        self.register_buffer("cos", cos, persistent=False)  # (max_len, hs)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.head_size:
            raise ValueError(f"RoPE was built for head size {self.head_size}, got x with head size {x.shape[-1]}")
        if positions is None:
            return apply_rope(x, self.cos, self.sin, pairing=self.pairing)
        return apply_rope(x, self.cos, self.sin, pairing=self.pairing, positions=positions)

    def extra_repr(self) -> str:
        return f"head_size={self.head_size}, max_len={self.max_len}, base={self.base}, pairing={self.pairing!r}"
