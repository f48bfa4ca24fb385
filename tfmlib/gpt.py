"""A decoder-only language model (GPT): token + position embeddings, a stack of
causal self-attention blocks, a final LayerNorm, and an output projection that
may share its matrix with the token embedding (weight tying).

The same class builds a Llama-style model (GPTConfig.preset("llama-cpu", ...)):
RMSNorm, SwiGLU, rotary positions inside attention, grouped-query attention,
no biases. Each option is a GPTConfig field; a block is built from one frozen
BlockSpec.

The "input" of a decoder-only model is its prompt; generation repeats the same
next-token step.

Shape legend: B batch, T sequence length, C d_model, V vocabulary size.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BlockSpec, GPTConfig
from .embeddings import TokenEmbedding
from .layers import FeedForward, ResidualSublayer, make_ffn, make_norm
from .masks import causal_mask
from .multihead import MultiHeadAttention
from .positions import RotaryEmbedding
from .transformer import make_positional
from .utils import check_tensor

from .kv_cache import KVCache, cached_self_attention

__all__ = ["GPT", "GPTBlock", "sample_next", "sampling_probs", "top_k_filter", "top_p_filter"]


class GPTBlock(nn.Module):
    """Causal self-attention sublayer, then feed-forward sublayer: x (B, T, C) -> (B, T, C).

    Built from one frozen ``BlockSpec`` (norm, ffn, activation, bias, norm_first, norm_eps,
    dropout); ``rope`` (a RotaryEmbedding, shared by all blocks) rotates queries and keys.
    With the default spec it is exactly tfmlib's EncoderBlock run with a causal mask.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, n_kv_heads: int | None = None,
                 spec: BlockSpec = BlockSpec(), rope: RotaryEmbedding | None = None):
        super().__init__()
        if not isinstance(spec, BlockSpec):
            raise TypeError(f"spec must be a BlockSpec, got {type(spec).__name__}")
        self.spec = spec
        self.self_attn = MultiHeadAttention(d_model, n_heads, n_kv_heads, dropout=spec.dropout, bias=spec.bias,
                                            rope=rope)
        self.ffn = make_ffn(spec.ffn, d_model, d_ff, spec.dropout, spec.activation, spec.bias)
        self.attn_sublayer = ResidualSublayer(d_model, spec.dropout, spec.norm_first, spec.norm_eps, norm=spec.norm)
        self.ffn_sublayer = ResidualSublayer(d_model, spec.dropout, spec.norm_first, spec.norm_eps, norm=spec.norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = True, *,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn_sublayer(x, lambda h: self.self_attn(h, mask=mask, is_causal=is_causal, positions=positions)[0])
        return self.ffn_sublayer(x, self.ffn)

    @property
    def ffn_out(self) -> nn.Linear:
        """The FFN's last matrix (F -> C), which writes into the residual stream."""
        return self.ffn.linear2 if isinstance(self.ffn, FeedForward) else self.ffn.down_proj


class GPT(nn.Module):
    """idx (B, T) token ids -> logits (B, T, V) for the next token at every position.

    forward(idx, positions=None, key_mask=None)
        positions  integer ids (T,) or (B, T), default 0 .. T-1 (e.g. shifted after left padding)
        key_mask   bool (B, T), True = a real token, False = padding that no token may attend to
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.tok_embed = TokenEmbedding(c.vocab_size, c.d_model, scale=False)
        if c.positional == "rope":  # positions enter inside attention, nothing is added to x
            self.pos = None
            self.embed_dropout = nn.Dropout(c.dropout)
            self.rope = RotaryEmbedding(c.head_size, c.max_len, c.rope_base, c.rope_pairing)
        else:
            self.pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
            self.rope = None
        # a decoder-only block is an encoder block run with a causal mask
        spec = c.block_spec()
        self.blocks = nn.ModuleList(
            GPTBlock(c.d_model, c.n_heads, c.d_ff, n_kv_heads=c.n_kv_heads, spec=spec, rope=self.rope)
            for _ in range(c.n_layers))
        self.norm = make_norm(c.norm, c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tok_embed.weight
        self.apply(self._init_weights)
        if c.scaled_init:  # GPT-2: each residual branch's output starts smaller, by 1/sqrt(2 n_layers)
            std = 0.02 / math.sqrt(2 * c.n_layers)
            for block in self.blocks:
                nn.init.normal_(block.self_attn.out_proj.weight, mean=0.0, std=std)
                nn.init.normal_(block.ffn_out.weight, mean=0.0, std=std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check_positions(self, positions: torch.Tensor, B: int, T: int) -> None:
        check_tensor(positions, "positions", ndim=(1, 2), dtype_kind="int")
        if positions.shape not in ((T,), (B, T)):
            raise ValueError(f"positions must have shape ({T},) or ({B}, {T}), got {tuple(positions.shape)}")
        if positions.device.type == "cpu" and positions.numel():
            lo, hi = int(positions.min()), int(positions.max())
            if lo < 0 or hi >= self.config.max_len:
                raise ValueError(f"positions must lie in [0, {self.config.max_len - 1}] (max_len="
                                 f"{self.config.max_len}), got positions from {lo} to {hi}")

    def _embed(self, idx: torch.Tensor, positions: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        """Token vectors (B, T, C), plus the position vectors unless positions are rotary."""
        x = self.tok_embed(idx)                                   # (B, T) -> (B, T, C)
        if positions is not None:
            self._check_positions(positions, *idx.shape)
        elif start + idx.shape[1] > self.config.max_len:
            raise ValueError(f"{start} earlier + {idx.shape[1]} new positions exceed max_len={self.config.max_len}")
        if self.rope is not None:
            return self.embed_dropout(x)
        if positions is None:
            return self.pos.dropout(x + self.pos.table()[start:start + idx.shape[1]])  # + (T, C)
        return self.pos.dropout(x + self.pos.table()[positions])  # + (T, C) or (B, T, C)

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor(idx, "idx", ndim=2, dtype_kind="int")
        if positions is None and key_mask is None and self.rope is None:
            x = self.pos(self.tok_embed(idx))  # (B, T) -> (B, T, C)
        else:
            x = self._embed(idx, positions)
        mask = None
        if key_mask is not None:
            B, T = idx.shape
            check_tensor(key_mask, "key_mask", ndim=2, dtype_kind="bool")
            if key_mask.shape != (B, T):
                raise ValueError(f"key_mask must have shape ({B}, {T}) like idx, got {tuple(key_mask.shape)}")
            diagonal = torch.eye(T, dtype=torch.bool, device=idx.device)      # a pad still sees itself: no empty row
            mask = (causal_mask(T, T, device=idx.device) & key_mask[:, None, None, :]) | diagonal  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask=mask, is_causal=mask is None, positions=positions)
        return self.lm_head(self.norm(x))  # (B, T, C) -> (B, T, V)

    @torch.no_grad()
    def forward_cached(self, idx_new: torch.Tensor, cache: KVCache,
                       positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T_new, V) for new tokens idx_new (B, T_new) that follow the len(cache) tokens
        already in ``cache`` (updated in place). Equals self(full)[:, -T_new:] in eval mode.
        ``positions`` (T_new,) or (B, T_new) overrides the default len(cache) .. len(cache) + T_new - 1."""
        check_tensor(idx_new, "idx_new", ndim=2, dtype_kind="int")
        start, T_new = len(cache), idx_new.shape[1]
        if start + T_new > self.config.max_len:
            raise ValueError(f"{start} cached + {T_new} new positions exceed max_len={self.config.max_len}")
        if positions is None and self.rope is None:
            x = self.tok_embed(idx_new) + self.pos.table()[start:start + T_new]  # (B, T_new, C) + (T_new, C)
        else:
            x = self._embed(idx_new, positions, start)
        for layer, block in enumerate(self.blocks):
            def attend(h, block=block, layer=layer):
                return cached_self_attention(block.self_attn, h, cache, layer, positions)
            x = block.attn_sublayer(x, attend)
            x = block.ffn_sublayer(x, block.ffn)
        return self.lm_head(self.norm(x))  # (B, T_new, C) -> (B, T_new, V)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = False) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to the prompt idx (B, T); temperature 0 = greedy.

        use_cache=True keeps a KVCache (call it in eval mode): each step then runs only the newest
        token through the model. Once the text is longer than max_len the cache is rebuilt from the
        last max_len tokens at every step, exactly what the uncached path computes.
        """
        cache = None
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.max_len:]                 # crop to the positional table
            if not use_cache:
                logits = self(context)[:, -1, :]                    # (B, V) for the last position
            else:
                if cache is None or idx.shape[1] > self.config.max_len:
                    cache = KVCache(len(self.blocks))
                    logits = self.forward_cached(context, cache)[:, -1, :]   # prefill the prompt
                else:
                    logits = self.forward_cached(idx[:, -1:], cache)[:, -1, :]  # only the newest token
            next_id = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
        return idx

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the logits (..., V) that are at least the k-th largest of their row (ties with it are
    kept too); set the others to -inf. k >= V keeps everything."""
    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probabilities sum to at
    least p (the token that crosses p is kept); set the others to -inf. p = 1 keeps everything."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (..., V)
    sorted_probs = torch.softmax(sorted_logits.float(), dim=-1)         # float32: fp16 cumsums drift
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs            # probability of the tokens ahead
    drop_sorted = mass_before >= p                                      # the set already reached p
    drop = drop_sorted.scatter(-1, order, drop_sorted)                  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or math.isnan(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")


def _finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """float32 logits (..., V) with each row's max at 0, safe to divide by any temperature.

    A +inf logit is certain: its row becomes 0 there and -inf elsewhere (ties share the mass).
    Raises ValueError for NaN logits or a row whose logits are all -inf (no token is possible).
    """
    check_tensor(logits, "logits", dtype_kind="float")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN: the model's output is broken (check the loss for NaN during training)")
    if torch.isposinf(logits).any():
        certain = torch.isposinf(logits).any(dim=-1, keepdim=True)       # (..., 1) rows with a +inf
        logits = torch.where(certain, torch.where(torch.isposinf(logits), 0.0, float("-inf")), logits)
    row_max = logits.max(dim=-1, keepdim=True).values                    # (..., 1)
    if torch.isneginf(row_max).any():
        raise ValueError("a row of logits is all -inf: no token is possible (did a filter remove every token?)")
    return logits - row_max                                              # max 0, the rest <= 0


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """The distribution (..., V) that sample_next draws from: divide the logits by the temperature,
    then apply top-k, then top-p, then softmax. temperature 0 = all mass on the argmax.

    Safe at the knobs' edges: any temperature > 0 however small (the limit is the argmax, ties
    sharing the mass), float16/bfloat16 logits (computed in float32; the result is float32),
    huge or +inf logits. Raises ValueError for NaN logits or a negative/NaN temperature.
    """
    _check_temperature(temperature)
    logits = _finite_logits(logits)                                      # (..., V), row max 0
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / temperature           # tiny temperature: 0 stays 0, the rest go to -inf, never NaN
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return F.softmax(logits, dim=-1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V) -> (B, 1).

    temperature 0 is greedy (argmax); top_k keeps the k most likely tokens; top_p keeps the
    smallest set whose probabilities sum to at least p (nucleus sampling).
    """
    _check_temperature(temperature)
    if temperature == 0:
        return _finite_logits(logits).argmax(dim=-1, keepdim=True)
    probs = sampling_probs(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)
