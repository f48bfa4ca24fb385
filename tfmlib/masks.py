"""Attention masks, one convention everywhere.

A mask is a *boolean* tensor where **True means "may attend"**, exactly as in
``torch.nn.functional.scaled_dot_product_attention``. It must broadcast to the
attention-score shape (B, H, T_q, T_k). Masks stay boolean until the softmax,
where the False entries become -inf (see ``tfmlib.attention``).

Shape legend: B batch, H heads, T_q query positions, T_k key positions.
"""
from __future__ import annotations

import torch

from .utils import check_tensor

__all__ = ["causal_mask", "padding_mask", "combine_masks", "check_mask"]


def causal_mask(T_q: int, T_k: int | None = None, device=None) -> torch.Tensor:
    """(T_q, T_k) lower-triangular mask: query i may attend to keys 0..i.

    When T_k > T_q (queries are the last T_q positions, as with a KV cache) the
    diagonal is shifted so that the last query still sees every key.
    """
    T_k = T_q if T_k is None else T_k
    if T_q < 1 or T_k < 1:
        raise ValueError(f"causal_mask needs positive lengths, got T_q={T_q}, T_k={T_k}")
    ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=T_k - T_q)


def padding_mask(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """(B, 1, 1, T) key mask from token ids (B, T): True where the key is a real token."""
    check_tensor(tokens, "tokens", ndim=2, dtype_kind="int")
    return (tokens != pad_id)[:, None, None, :]  # (B, T) -> (B, 1, 1, T)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the masks that are not None (each broadcastable to (B, H, T_q, T_k))."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out


def check_mask(mask: torch.Tensor | None, T_q: int, T_k: int, name: str = "mask") -> None:
    """Raise TypeError/ValueError unless ``mask`` is boolean and broadcastable to (..., T_q, T_k)."""
    if mask is None:
        return
    check_tensor(mask, name, dtype_kind="bool")
    if mask.dim() < 2 or mask.dim() > 4:
        raise ValueError(f"{name} must have 2 to 4 dimensions broadcastable to (B, H, {T_q}, {T_k}), "
                         f"got shape {tuple(mask.shape)}")
    if mask.shape[-2] not in (1, T_q) or mask.shape[-1] not in (1, T_k):
        raise ValueError(f"{name} must broadcast to (B, H, T_q={T_q}, T_k={T_k}), got shape {tuple(mask.shape)}")
