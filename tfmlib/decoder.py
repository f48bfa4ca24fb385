"""The decoder: masked self-attention, cross-attention to the encoder's output,
and a feed-forward network, each wrapped in Add & Norm.
Equals nn.TransformerDecoderLayer / nn.TransformerDecoder.

In cross-attention the **queries come from the decoder**; the **keys and values
come from the encoder output** (the "memory").

Shape legend: B batch, T target length, S source length, C d_model, H heads.
Masks: bool, True = may attend; tgt_mask broadcasts to (B, H, T, T),
memory_mask to (B, H, T, S).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import FeedForward, LayerNorm, ResidualSublayer
from .multihead import MultiHeadAttention

__all__ = ["DecoderBlock", "Decoder"]


class DecoderBlock(nn.Module):
    """x (B, T, C), memory (B, S, C) -> (B, T, C)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu", n_kv_heads: int | None = None):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, n_kv_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, n_kv_heads, dropout=dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.self_attn_sublayer = ResidualSublayer(d_model, dropout, norm_first)
        self.cross_attn_sublayer = ResidualSublayer(d_model, dropout, norm_first)
        self.ffn_sublayer = ResidualSublayer(d_model, dropout, norm_first)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, is_causal: bool = True) -> torch.Tensor:
        x = self.self_attn_sublayer(x, lambda h: self.self_attn(h, mask=tgt_mask, is_causal=is_causal)[0])
        # queries from the decoder (h), keys and values from the encoder (memory)
        x = self.cross_attn_sublayer(x, lambda h: self.cross_attn(h, memory, memory, mask=memory_mask)[0])
        return self.ffn_sublayer(x, self.ffn)


class Decoder(nn.Module):
    """A stack of ``n_layers`` DecoderBlocks, then a final LayerNorm (as nn.Transformer has)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu", n_kv_heads: int | None = None,
                 final_norm: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"a decoder needs at least one layer, got n_layers={n_layers}")
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first, activation, n_kv_heads)
            for _ in range(n_layers))
        self.norm = LayerNorm(d_model) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, is_causal: bool = True) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, is_causal=is_causal)
        return self.norm(x)
