"""Encoder-only models (BERT-style): a sequence classifier with [CLS] or mean pooling,
masked mean pooling, and BERT's masked-language-model corruption rule (80/10/10).

    cfg = EncoderConfig.preset("cpu", vocab_size=len(vocab), n_classes=2)
    model = EncoderClassifier(cfg)
    logits = model(ids)                 # ids (B, T) -> (B, n_classes)
    hidden, keep = model.features(ids)  # per-token vectors (B, T', C) and (B, T') real-token mask
    sentence = model.embed(ids)         # pooled sentence vectors (B, C), e.g. for retrieval
    model(ids, attention_mask=keep, token_type_ids=types)  # masks and segments given, as in Hugging Face
    inputs, labels = mlm_mask(ids, mask_id=4, vocab_size=V, special_ids=[0, 1, 2, 3, 4])

With ``pooling="cls"`` the model puts ``cls_id`` in front of every sequence (T' = T + 1) and
classifies from that position's final vector; with ``pooling="mean"`` (T' = T) it averages the
vectors of the real tokens. The encoder is bidirectional: no causal mask, only the padding mask
(rebuilt from ``pad_id`` unless an ``attention_mask`` is given).

BERT's own layout is a choice of fields (tfmlib.pretrained loads real BERT weights this way):
``n_token_types=2`` (segment embeddings), ``embed_norm=True`` (a LayerNorm after the summed
embeddings), ``final_norm=False`` (post-LN blocks, no LayerNorm at the end), ``norm_eps=1e-12``;
``n_classes=0`` builds no head: the model then returns the pooled sentence vectors.

Shape legend: B batch, T sequence length, C d_model, H heads, K classes.
Masks: bool, True = real token / may attend.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .config import EncoderConfig  # noqa: F401 - lives in config.py, importable from here as before
from .embeddings import TokenEmbedding
from .encoder import Encoder
from .layers import LayerNorm
from .transformer import make_positional
from .utils import check_tensor

__all__ = ["EncoderConfig", "EncoderClassifier", "mean_pool", "mlm_mask", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # the label F.cross_entropy skips by default


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors: hidden (B, T, C), mask (B, T) bool (True = real) -> (B, C).

    Padded positions get weight 0; a row without any real token gives the zero vector.
    """
    check_tensor(hidden, "hidden", ndim=3, dtype_kind="float")
    check_tensor(mask, "mask", ndim=2, dtype_kind="bool")
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask must have shape (B, T) = {tuple(hidden.shape[:2])}, got {tuple(mask.shape)}")
    keep = mask.unsqueeze(-1)                              # (B, T) -> (B, T, 1)
    total = torch.where(keep, hidden, torch.zeros_like(hidden)).sum(dim=1)  # (B, C); padding adds exactly 0
    count = keep.sum(dim=1).clamp(min=1).to(hidden.dtype)  # (B, 1) real tokens per row
    return total / count


class EncoderClassifier(nn.Module):
    """tokens (B, T) -> logits (B, K): embeddings + positions, an Encoder stack, pooling, a linear head."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        if not isinstance(config, EncoderConfig):
            raise TypeError(f"config must be an EncoderConfig, got {type(config).__name__}")
        self.config = c = config
        self.tok_embed = TokenEmbedding(c.vocab_size, c.d_model, scale=False)
        self.pos = make_positional(c.positional, c.d_model, c.max_len, c.dropout)
        self.type_embed = nn.Embedding(c.n_token_types, c.d_model) if c.n_token_types else None
        self.embed_norm = LayerNorm(c.d_model, eps=c.norm_eps) if c.embed_norm else None
        self.encoder = Encoder(c.n_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first,
                               c.activation, c.n_kv_heads, final_norm=c.final_norm, norm_eps=c.norm_eps)
        self.head = nn.Linear(c.d_model, c.n_classes) if c.n_classes else None
        # PyTorch's default initialisation (token embeddings N(0, 1)): for models this small it trains
        # faster than GPT-2/BERT's N(0, 0.02), which only pays off in deep, wide stacks.

    def with_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T + 1) with cls_id in front when pooling is "cls"; unchanged otherwise."""
        if self.config.pooling != "cls":
            return tokens
        cls = torch.full_like(tokens[:, :1], self.config.cls_id)  # (B, 1)
        return torch.cat([cls, tokens], dim=1)                    # (B, 1) + (B, T) -> (B, T + 1)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token output vectors (B, T', C) and the real-token mask (B, T'); T' = T + 1 with [CLS].

        attention_mask  (B, T) bool or 0/1 integers, True/1 = a real token (default: input_ids != pad_id)
        token_type_ids  (B, T) segment ids in [0, n_token_types) (default: all 0); needs n_token_types > 0
        """
        check_tensor(input_ids, "tokens (input_ids)", ndim=2, dtype_kind="int")
        room = self.config.max_len - (self.config.pooling == "cls")  # [CLS] takes one position
        if input_ids.shape[1] > room:
            raise ValueError(f"{input_ids.shape[1]} tokens do not fit: config.max_len={self.config.max_len} allows "
                             f"at most {room} tokens" + (" plus the [CLS] put in front" if room < self.config.max_len else ""))
        if attention_mask is not None:
            self._check_side(attention_mask, "attention_mask", input_ids)
        if token_type_ids is not None:
            self._check_side(token_type_ids, "token_type_ids", input_ids)
        with_cls = self.with_cls(input_ids)                     # (B, T')
        if attention_mask is None:
            keep = with_cls != self.config.pad_id               # (B, T')
        else:
            keep = attention_mask.bool()                        # (B, T)
            if self.config.pooling == "cls":                    # the prepended [CLS] is a real token
                keep = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)  # (B, T + 1)
        if token_type_ids is not None and self.config.pooling == "cls":  # ... of segment 0
            token_type_ids = torch.cat([torch.zeros_like(token_type_ids[:, :1]), token_type_ids], dim=1)
        x = self._embed(with_cls, token_type_ids)               # (B, T') -> (B, T', C)
        hidden = self.encoder(x, mask=keep[:, None, None, :])   # key mask (B, 1, 1, T')
        return hidden, keep

    @staticmethod
    def _check_side(t: torch.Tensor, name: str, tokens: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor) or t.is_floating_point():
            raise TypeError(f"{name} must be an integer or boolean tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.shape != tokens.shape:
            raise ValueError(f"{name} must have the shape of the tokens {tuple(tokens.shape)}, got {tuple(t.shape)}")

    def _embed(self, tokens: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Token + position (+ segment) vectors (B, T, C), then the embedding LayerNorm, then dropout."""
        T = tokens.shape[1]                                         # features() checked T <= max_len
        x = self.tok_embed(tokens) + self.pos.table()[:T]           # (B, T, C) + (T, C)
        if self.type_embed is not None:
            types = torch.zeros_like(tokens) if token_type_ids is None else token_type_ids
            if types.numel() and not 0 <= int(types.min()) <= int(types.max()) < self.config.n_token_types:
                raise ValueError(f"token_type_ids must lie in [0, {self.config.n_token_types - 1}], got ids "
                                 f"from {int(types.min())} to {int(types.max())}")
            x = x + self.type_embed(types)                           # + (B, T, C)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but this model has no segment embeddings (n_token_types=0)")
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.pos.dropout(x)

    def pool(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, T', C) -> (B, C): the [CLS] vector, or the mean over real tokens."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, keep)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence vectors (B, C): the pooled encoder output that the head classifies."""
        return self.pool(*self.features(input_ids, attention_mask, token_type_ids))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids -> logits (B, K); with n_classes=0 (no head) the sentence vectors (B, C)."""
        sentence = self.embed(input_ids, attention_mask, token_type_ids)
        return sentence if self.head is None else self.head(sentence)  # (B, C) -> (B, K)


def mlm_mask(tokens: torch.Tensor, mask_id: int, vocab_size: int, special_ids: Sequence[int] = (),
             p: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-language-model corruption: returns (inputs, labels), both shaped like ``tokens``.

    Each ordinary token (not in ``special_ids``, e.g. padding, [CLS], [SEP], [MASK]) is chosen for
    prediction with probability ``p``. A chosen token is replaced by ``mask_id`` with probability 0.8,
    by a random ordinary token with probability 0.1, and left unchanged with probability 0.1.
    labels hold the original token where chosen and IGNORE_INDEX (-100) everywhere else.
    ``tokens`` is not modified.
    """
    check_tensor(tokens, "tokens", dtype_kind="int")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    special = torch.as_tensor(sorted({*special_ids, mask_id}), dtype=torch.long)
    if special.numel() and (int(special.min()) < 0 or int(special.max()) >= vocab_size):
        raise ValueError(f"mask_id and special_ids must lie in [0, {vocab_size - 1}], got {special.tolist()}")
    ordinary_ids = torch.ones(vocab_size, dtype=torch.bool)
    ordinary_ids[special] = False
    ordinary_ids = ordinary_ids.nonzero().squeeze(1)      # ids a random replacement may take
    if ordinary_ids.numel() == 0:
        raise ValueError("every id is special: there is no ordinary token to predict or to sample")
    device = tokens.device
    candidates = ~torch.isin(tokens, special.to(device))  # (B, T) ordinary tokens
    chosen = (torch.rand(tokens.shape, generator=generator, device=device) < p) & candidates
    action = torch.rand(tokens.shape, generator=generator, device=device)  # which of 80/10/10
    use_mask = chosen & (action < 0.8)
    use_random = chosen & (action >= 0.8) & (action < 0.9)
    random_ids = ordinary_ids.to(device)[torch.randint(ordinary_ids.numel(), tokens.shape,
                                                       generator=generator, device=device)]
    inputs = torch.where(use_mask, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(use_random, random_ids.to(tokens.dtype), inputs)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, labels
