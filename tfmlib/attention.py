"""Scaled dot-product attention, written out.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Shape legend: B batch, H heads, T_q queries, T_k keys, d_k query/key width,
d_v value width. Any number of leading dimensions (B, H, ...) is allowed.
Masks are boolean, True = may attend (see ``tfmlib.masks``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .utils import check_tensor

__all__ = ["scaled_dot_product_attention", "masked_softmax", "check_qkv"]


def masked_softmax(attn_scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis (the keys); positions where ``mask`` is False get weight 0.

    This is the only place where a boolean mask becomes -inf. A query row with nothing
    to attend to (every key masked, e.g. a batch row that is all padding) gets weights
    of all zeros, not 0 / 0 = NaN: its context is then the zero vector, as in
    ``F.scaled_dot_product_attention`` (torch >= 2.5). Gradients stay finite too.
    """
    if mask is None:
        return torch.softmax(attn_scores, dim=-1)
    attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    empty_rows = ~mask.any(dim=-1, keepdim=True)  # (..., T_q or 1, 1): found on the (small) mask, not the scores
    if attn_scores.device.type == "cpu" and not bool(empty_rows.any()):
        return torch.softmax(attn_scores, dim=-1)  # the usual case: every query has a key (no GPU sync here)
    attn_scores = attn_scores.masked_fill(empty_rows, 0.0)   # finite everywhere: no NaN forward or backward
    return torch.softmax(attn_scores, dim=-1).masked_fill(empty_rows, 0.0)


def _broadcast(a, b) -> tuple | None:
    """torch.broadcast_shapes(a, b) as a tuple, or None when they do not broadcast.
    Plain Python: ~1 us instead of ~30 us, which matters once per attention call."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and x != 1 and y != 1 for x, y in zip(a, b)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def check_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              mask: torch.Tensor | None = None) -> None:
    """Raise a clear error unless query (..., T_q, d_k), key (..., T_k, d_k), value (..., T_k, d_v)
    and an optional boolean mask broadcastable to (..., T_q, T_k) fit together."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(t, name, dtype_kind="float")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, d), got shape {tuple(t.shape)}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must share their last dimension d_k, "
                         f"got query {tuple(query.shape)} and key {tuple(key.shape)}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value must have the same number of positions T_k, "
                         f"got key {tuple(key.shape)} and value {tuple(value.shape)}")
    if mask is not None:
        check_tensor(mask, "mask", dtype_kind="bool")
        batch_shape = _broadcast(query.shape[:-2], key.shape[:-2])
        if batch_shape is None:
            raise ValueError(f"query and key must have broadcastable leading dimensions, "
                             f"got query {tuple(query.shape)} and key {tuple(key.shape)}")
        scores_shape = (*batch_shape, query.shape[-2], key.shape[-2])
        if _broadcast(mask.shape, scores_shape) != scores_shape:
            raise ValueError(f"mask must broadcast to the attention scores' shape {tuple(scores_shape)} "
                             f"(…, T_q, T_k), got shape {tuple(mask.shape)}")


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 scale: float | None = None, training: bool = True,
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(context, attn_weights)``.

    query (..., T_q, d_k), key (..., T_k, d_k), value (..., T_k, d_v)
    mask: bool, broadcastable to (..., T_q, T_k), True = may attend.
    context: (..., T_q, d_v); attn_weights: (..., T_q, T_k), each row sums to 1, except
    a query whose keys are all masked: its weights and its context are zeros.
    Equals ``F.scaled_dot_product_attention(query, key, value, attn_mask=mask)``.
    """
    check_qkv(query, key, value, mask)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn_scores = query @ key.transpose(-2, -1) * scale  # (..., T_q, d_k) @ (..., d_k, T_k) -> (..., T_q, T_k)
    attn_weights = masked_softmax(attn_scores, mask)      # softmax over keys: rows sum to 1
    if dropout_p > 0.0 and training:
        attn_weights = F.dropout(attn_weights, p=dropout_p)
    context = attn_weights @ value                         # (..., T_q, T_k) @ (..., T_k, d_v) -> (..., T_q, d_v)
    return context, attn_weights
