"""The encoder: blocks of bidirectional self-attention and a feed-forward network,
each wrapped in Add & Norm. Equals nn.TransformerEncoderLayer / nn.TransformerEncoder.

Shape legend: B batch, T sequence length, C d_model, H heads.
Masks: bool, broadcastable to (B, H, T, T), True = may attend.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import FeedForward, LayerNorm, ResidualSublayer
from .multihead import MultiHeadAttention

__all__ = ["EncoderBlock", "Encoder"]


class EncoderBlock(nn.Module):
    """Self-attention sublayer, then feed-forward sublayer. x (B, T, C) -> (B, T, C).

    With ``is_causal=True`` the same block is a decoder-only (GPT) block.
    ``norm_eps`` is both LayerNorms' epsilon (PyTorch's 1e-5; BERT uses 1e-12).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu", n_kv_heads: int | None = None,
                 bias: bool = True, *, norm_eps: float = 1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, n_kv_heads, dropout=dropout, bias=bias)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout, activation=activation, bias=bias)
        self.attn_sublayer = ResidualSublayer(d_model, dropout, norm_first, norm_eps)
        self.ffn_sublayer = ResidualSublayer(d_model, dropout, norm_first, norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = self.attn_sublayer(x, lambda h: self.self_attn(h, mask=mask, is_causal=is_causal)[0])
        return self.ffn_sublayer(x, self.ffn)


class Encoder(nn.Module):
    """A stack of ``n_layers`` EncoderBlocks, then a final LayerNorm (as nn.Transformer has).

    ``final_norm=False`` leaves the final LayerNorm out (BERT's post-LN stack has none);
    ``norm_eps`` reaches every LayerNorm of the stack.
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "relu", n_kv_heads: int | None = None,
                 final_norm: bool = True, *, norm_eps: float = 1e-5):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"an encoder needs at least one layer, got n_layers={n_layers}")
        self.layers = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, activation, n_kv_heads, norm_eps=norm_eps)
            for _ in range(n_layers))
        self.norm = LayerNorm(d_model, eps=norm_eps) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask=mask)
        return self.norm(x)
