"""The full encoder-decoder Transformer.

``Transformer`` is the body and equals nn.Transformer: it maps already-embedded
source (B, S, C) and target (B, T, C) to decoder states (B, T, C).
``Seq2SeqTransformer`` adds token embeddings, positions and the output
projection, and builds padding and causal masks from token ids.

Shape legend: B batch, S source length, T target length, C d_model, V vocab.
Masks: bool, True = may attend.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import TransformerConfig
from .decoder import Decoder
from .embeddings import TokenEmbedding
from .encoder import Encoder
from .masks import padding_mask
from .positions import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = ["Transformer", "Seq2SeqTransformer", "make_positional"]


class Transformer(nn.Module):
    """Encoder stack + decoder stack, each ending in a LayerNorm, like nn.Transformer."""

    def __init__(self, d_model: int = 512, n_heads: int = 8, n_encoder_layers: int = 6,
                 n_decoder_layers: int = 6, d_ff: int = 2048, dropout: float = 0.1,
                 norm_first: bool = False, activation: str = "relu", n_kv_heads: int | None = None):
        super().__init__()
        args = (d_model, n_heads, d_ff, dropout, norm_first, activation, n_kv_heads)
        self.encoder = Encoder(n_encoder_layers, *args)
        self.decoder = Decoder(n_decoder_layers, *args)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                is_causal: bool = True) -> torch.Tensor:
        """src (B, S, C), tgt (B, T, C) -> (B, T, C). The decoder is causal unless is_causal=False."""
        memory = self.encoder(src, mask=src_mask)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, is_causal=is_causal)


def make_positional(kind: str, d_model: int, max_len: int, dropout: float) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len, dropout)
    if kind == "learned":
        return LearnedPositionalEmbedding(d_model, max_len, dropout)
    raise ValueError(f"positional must be 'sinusoidal' or 'learned', got {kind!r}")


class Seq2SeqTransformer(nn.Module):
    """Token ids in, next-token logits out: src (B, S), tgt_in (B, T) -> logits (B, T, V_tgt)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = c = config
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = TokenEmbedding(c.tgt_vocab_size, c.d_model)
        self.src_pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        self.tgt_pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        self.transformer = Transformer(c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers,
                                       c.d_ff, c.dropout, c.norm_first, c.activation, c.n_kv_heads)
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, C) and its key mask (B, 1, 1, S)."""
        src_mask = padding_mask(src, self.config.pad_id)
        memory = self.transformer.encoder(self.src_pos(self.src_embed(src)), mask=src_mask)
        return memory, src_mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V). Causal self-attention, padding masked on both sides."""
        tgt_mask = padding_mask(tgt_in, self.config.pad_id)
        x = self.transformer.decoder(self.tgt_pos(self.tgt_embed(tgt_in)), memory,
                                     tgt_mask=tgt_mask, memory_mask=src_mask, is_causal=True)
        return self.lm_head(x)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)
