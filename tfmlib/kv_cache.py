"""The key/value cache for fast autoregressive generation.

Without a cache, every generated token re-runs the model over the whole prefix: step t
recomputes the keys and values of all t earlier tokens, although they never change (a
causal model's past does not depend on the future). The cache keeps them: each step runs
only the NEW tokens through the blocks and appends their keys/values to the cache.

Shape legend: B batch, T_new new tokens, T_past cached tokens, C d_model,
H query heads, H_kv key/value heads, hs head size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import causal_mask
from .multihead import MultiHeadAttention, repeat_kv

__all__ = ["KVCache", "cached_self_attention", "forward_flops"]


class KVCache:
    """Per layer, the keys and values of every token seen so far: (B, H_kv, T_past, hs) each."""

    def __init__(self, n_layers: int):
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def __len__(self) -> int:
        """Number of cached positions (T_past)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add k, v (B, H_kv, T_new, hs) of ``layer``; return all keys/values (B, H_kv, T_past + T_new, hs)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, H_kv, T_past + T_new, hs)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def numel(self) -> int:
        """Numbers stored: 2 (k and v) x layers x B x H_kv x T x hs."""
        return sum(t.numel() for t in self.keys + self.values if t is not None)

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.keys)}, positions={len(self)}, numbers={self.numel()})"


def cached_self_attention(attn: MultiHeadAttention, x: torch.Tensor, cache: KVCache, layer: int,
                          positions: torch.Tensor | None = None) -> torch.Tensor:
    """Causal self-attention of the new positions x (B, T_new, C) over the cached past and themselves.

    Uses the module's own projections, so it computes what ``attn(full, is_causal=True)`` computes
    for the last T_new positions of the full sequence (eval mode: no dropout). With RoPE the new
    queries and keys are rotated by ``positions`` (T_new,) or (B, T_new), by default
    T_past .. T_past + T_new - 1; the cache keeps keys already rotated.
    """
    B, T_new, C = x.shape
    H, H_kv, hs = attn.n_heads, attn.n_kv_heads, attn.head_size
    q = attn.q_proj(x).view(B, T_new, H, hs).transpose(1, 2)      # (B, H, T_new, hs)
    k = attn.k_proj(x).view(B, T_new, H_kv, hs).transpose(1, 2)   # (B, H_kv, T_new, hs)
    v = attn.v_proj(x).view(B, T_new, H_kv, hs).transpose(1, 2)   # (B, H_kv, T_new, hs)
    if attn.rope is not None:
        if positions is None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[2]  # this layer's T_past
            positions = torch.arange(past, past + T_new, device=x.device)            # (T_new,)
        q, k = attn.rope(q, positions), attn.rope(k, positions)
    k, v = cache.append(layer, k, v)                               # (B, H_kv, T_all, hs)
    k, v = repeat_kv(k, H // H_kv), repeat_kv(v, H // H_kv)        # (B, H, T_all, hs)
    mask = causal_mask(T_new, k.shape[2], device=x.device)        # the new queries are the last T_new
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # (B, H, T_new, hs)
    return attn.out_proj(context.transpose(1, 2).reshape(B, T_new, C))  # (B, T_new, H, hs) -> (B, T_new, C)


def forward_flops(config, T_new: int, T_past: int = 0) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one GPT forward over T_new new tokens that attend
    to T_past earlier ones (T_past = 0 and T_new = T: the uncached forward of a length-T prefix).

    Counts the matrix products only: projections, attention scores and weighted sums (causal,
    ~T_new x (T_past + (T_new + 1) / 2) query-key pairs), the feed-forward network (two matrices, three
    for SwiGLU) and the output head.
    """
    C, F_, V, L = config.d_model, config.d_ff, config.vocab_size, config.n_layers
    kv_width = (config.n_kv_heads or config.n_heads) * config.head_size
    ffn_matrices = 3 if getattr(config, "ffn", "mlp") == "swiglu" else 2   # SwiGLU: gate, up, down
    pairs = T_new * T_past + T_new * (T_new + 1) // 2              # causal query-key pairs
    per_layer = (2 * T_new * C * (2 * C + 2 * kv_width)             # q, k, v, out projections
                 + 2 * 2 * pairs * C                                # q.k scores and weights @ v
                 + 2 * ffn_matrices * T_new * C * F_)               # the feed-forward matrices
    return L * per_layer + 2 * T_new * C * V                        # + the output head
