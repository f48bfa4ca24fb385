"""A decoder-only language model (GPT): token + position embeddings, a stack of
causal self-attention blocks, a final LayerNorm, and an output projection that
may share its matrix with the token embedding (weight tying).

The "input" of a decoder-only model is its prompt; generation repeats the same
next-token step.

Shape legend: B batch, T sequence length, C d_model, V vocabulary size.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig
from .embeddings import TokenEmbedding
from .encoder import EncoderBlock
from .layers import LayerNorm
from .transformer import make_positional
from .utils import check_tensor

__all__ = ["GPT", "sample_next"]


class GPT(nn.Module):
    """idx (B, T) token ids -> logits (B, T, V) for the next token at every position."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.tok_embed = TokenEmbedding(c.vocab_size, c.d_model, scale=False)
        self.pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        # a decoder-only block is an encoder block run with a causal mask
        self.blocks = nn.ModuleList(
            EncoderBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.activation, c.n_kv_heads)
            for _ in range(c.n_layers))
        self.norm = LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tok_embed.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_tensor(idx, "idx", ndim=2, dtype_kind="int")
        x = self.pos(self.tok_embed(idx))  # (B, T) -> (B, T, C)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.lm_head(self.norm(x))  # (B, T, C) -> (B, T, V)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to the prompt idx (B, T); temperature 0 = greedy."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.max_len:]                 # crop to the positional table
            logits = self(context)[:, -1, :]                        # (B, V) for the last position
            next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
        return idx


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V) -> (B, 1).

    temperature 0 is greedy (argmax); top_k keeps the k most likely tokens; top_p keeps the
    smallest set whose probabilities sum to at least p (nucleus sampling).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
