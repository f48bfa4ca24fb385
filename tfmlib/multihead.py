"""Multi-head attention, with grouped-query (GQA) and multi-query (MQA) variants.

Heads are a reshape of the feature dimension, not of the tokens:
    (B, T, C) -> (B, T, H, hs) -> (B, H, T, hs),  with hs = C // H.
With ``n_kv_heads`` < ``n_heads`` several query heads share one key/value head
(GQA; MQA is n_kv_heads = 1), which shrinks the key/value cache.
With ``rope`` (a positions.RotaryEmbedding) queries and keys are rotated by their
positions after the projections, as in Llama: no position vectors are added to x.

Shape legend: B batch, T_q/T_k query/key length, C d_model, H query heads,
H_kv key/value heads, hs head size. Masks: bool, True = may attend.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import check_qkv, scaled_dot_product_attention
from .masks import causal_mask
from .positions import RotaryEmbedding
from .utils import check_tensor

__all__ = ["MultiHeadAttention", "split_heads", "merge_heads", "repeat_kv", "record_attention"]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, hs): cut the feature dimension into H slices of width hs."""
    B, T, C = x.shape
    if C % n_heads:
        raise ValueError(f"width {C} is not divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, T, H, hs) -> (B, H, T, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, hs) -> (B, T, C): undo ``split_heads`` (transpose back, then concatenate)."""
    B, H, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hs)  # (B, T, H, hs) -> (B, T, C)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, T, hs) -> (B, H_kv * n_rep, T, hs): query head h reads key/value head h // n_rep."""
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with ``n_heads`` query heads and ``n_kv_heads`` key/value heads.

    forward(query, key=None, value=None, mask=None, need_weights=False, is_causal=False, *, positions=None)
        query (B, T_q, C); key, value (B, T_k, C) (default: the query -> self-attention)
        mask  bool, broadcastable to (B, H, T_q, T_k), True = may attend
        positions  with ``rope``: integer position ids (T,) or (B, T) of the self-attention's
                   tokens (default 0 .. T-1; e.g. shifted after left padding)
    returns (output (B, T_q, C), attn_weights (B, H, T_q, T_k) or None)

    Without ``need_weights`` the heads run through PyTorch's fused
    F.scaled_dot_product_attention, which computes the same numbers faster.
    Set ``record_weights = True`` (or use ``record_attention(model)``) to keep the
    last weights in ``attn_weights`` for plotting.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None,
                 dropout: float = 0.0, bias: bool = True, *, rope: RotaryEmbedding | None = None):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads: got d_model={d_model}, n_heads={n_heads}")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads must be divisible by n_kv_heads: got n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_size = d_model // n_heads
        self.dropout = dropout
        kv_width = n_kv_heads * self.head_size
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)   # W_Q: "what am I looking for?"
        self.k_proj = nn.Linear(d_model, kv_width, bias=bias)  # W_K: "what can I be matched against?"
        self.v_proj = nn.Linear(d_model, kv_width, bias=bias)  # W_V: "what do I contribute?"
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W_O: mixes the concatenated heads
        if rope is not None and rope.head_size != self.head_size:
            raise ValueError(f"the RotaryEmbedding was built for head size {rope.head_size}, but "
                             f"d_model={d_model} / n_heads={n_heads} gives head size {self.head_size}")
        self.rope = rope  # shared between layers: no parameters, only cos/sin tables
        self.record_weights = False
        self.attn_weights: torch.Tensor | None = None

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,
                value: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                need_weights: bool = False, is_causal: bool = False, *,
                positions: torch.Tensor | None = None):
        self_attention = key is None or key is query
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        B, T_q, C = query.shape
        T_k = key.shape[1]
        q = self.q_proj(query).view(B, T_q, self.n_heads, self.head_size).transpose(1, 2)   # (B, H, T_q, hs)
        k = self.k_proj(key).view(B, T_k, self.n_kv_heads, self.head_size).transpose(1, 2)  # (B, H_kv, T_k, hs)
        v = self.v_proj(value).view(B, T_k, self.n_kv_heads, self.head_size).transpose(1, 2)  # (B, H_kv, T_k, hs)
        if self.rope is not None:
            q = self.rope(q, positions)                                   # rotate by the query positions
            k = self.rope(k, positions if self_attention else None)       # and the keys by theirs
        elif positions is not None:
            raise ValueError("positions only matter with RoPE: this MultiHeadAttention was built with rope=None")
        n_rep = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T_k, hs)
        if is_causal:
            causal = causal_mask(T_q, T_k, device=query.device)
            mask = causal if mask is None else (mask & causal)
        dropout_p = self.dropout if self.training else 0.0
        want_weights = need_weights or self.record_weights
        if want_weights:
            context, attn_weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p)
            if self.record_weights:
                self.attn_weights = attn_weights.detach()
        else:
            check_qkv(q, k, v, mask)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            if mask is not None and query.device.type != "cpu":
                # a query with no key gets a zero context, as on the CPU (tested) and in the need_weights
                # path, whichever fused kernel the accelerator picked
                context = context.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            attn_weights = None
        out = self.out_proj(merge_heads(context))  # (B, H, T_q, hs) -> (B, T_q, C)
        return out, (attn_weights if need_weights else None)

    def _check_inputs(self, query, key, value):
        for name, t in (("query", query), ("key", key), ("value", value)):
            check_tensor(t, name, ndim=3, last_dim=self.d_model, dtype_kind="float")
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(f"query, key and value must share the batch size, got {query.shape[0]}, "
                             f"{key.shape[0]} and {value.shape[0]}")
        if key.shape[1] != value.shape[1]:
            raise ValueError(f"key and value must have the same length T_k, got {key.shape[1]} and {value.shape[1]}")

    def extra_repr(self) -> str:
        rope = f", rope={self.rope.pairing!r}" if self.rope is not None else ""
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"head_size={self.head_size}{rope}")


class record_attention:
    """Context manager: every MultiHeadAttention inside ``model`` keeps its last weights.

        with record_attention(model):
            model(x)
        maps = [m.attn_weights for m in model.modules() if isinstance(m, MultiHeadAttention)]
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]

    def __enter__(self):
        for m in self.layers:
            m.record_weights = True
        return self.layers

    def __exit__(self, *exc):
        for m in self.layers:
            m.record_weights = False
        return False
