"""Frozen dataclass configs with named presets.

    cfg = TransformerConfig.preset("cpu", src_vocab_size=40, tgt_vocab_size=40)
    cfg = GPTConfig.preset(preset_for_device(), vocab_size=65)  # "gpu" on CUDA
    cfg = EncoderConfig.preset("cpu", vocab_size=40, n_classes=2)  # tfmlib.bert.EncoderClassifier
    cfg = cfg.replace(dropout=0.0)      # configs are immutable: replace() returns a copy
    cfg = GPTConfig.preset("llama-cpu", vocab_size=65)  # RMSNorm, SwiGLU, RoPE, GQA, no biases
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch

from .utils import get_device

__all__ = ["TransformerConfig", "GPTConfig", "BlockSpec", "EncoderConfig", "preset_for_device"]


class _Config:
    """Shared behaviour: presets, replace(), and validation of the common fields."""

    PRESETS: dict[str, dict] = {}
    POSITIONALS = ("sinusoidal", "learned")
    ACTIVATIONS = ("relu", "gelu", "gelu_tanh")

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {unknown}; fields are {sorted(known)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def _check_common(self):
        for name in ("d_model", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model must be divisible by n_heads: got d_model={self.d_model}, n_heads={self.n_heads}")
        kv = self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        if kv < 1 or self.n_heads % kv:
            raise ValueError(f"n_heads must be divisible by n_kv_heads: got n_heads={self.n_heads}, n_kv_heads={kv}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be {' or '.join(map(repr, self.ACTIVATIONS))}, got {self.activation!r}")
        if self.positional not in self.POSITIONALS:
            raise ValueError(f"positional must be {' or '.join(map(repr, self.POSITIONALS))}, got {self.positional!r}")

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class TransformerConfig(_Config):
    """An encoder-decoder Transformer ("Attention Is All You Need")."""

    src_vocab_size: int = 32
    tgt_vocab_size: int = 32
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    max_len: int = 128
    norm_first: bool = True
    activation: str = "relu"
    positional: str = "sinusoidal"
    tie_embeddings: bool = False  # share target embedding and output projection
    pad_id: int = 0

    def __post_init__(self):
        self._check_common()
        for name in ("src_vocab_size", "tgt_vocab_size", "n_encoder_layers", "n_decoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


TransformerConfig.PRESETS = {
    "tiny": dict(d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, max_len=64),
    "cpu": dict(d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=256, max_len=128),
    "gpu": dict(d_model=256, n_heads=8, n_encoder_layers=4, n_decoder_layers=4, d_ff=1024, max_len=256),
    "base": dict(d_model=512, n_heads=8, n_encoder_layers=6, n_decoder_layers=6, d_ff=2048, max_len=512,
                 norm_first=False),  # the 2017 paper's base model
}


@dataclass(frozen=True)
class BlockSpec:
    """How one decoder block is built, as one frozen value (GPTBlock takes it; GPTConfig.block_spec()).

        norm        "layernorm" (GPT-2) or "rmsnorm" (Llama)
        ffn         "mlp" (Linear, activation, Linear) or "swiglu" (gated, Llama)
        activation  the MLP's "relu", "gelu", "gelu_tanh" (GPT-2) or "silu" (SwiGLU always gates with SiLU)
        bias        biases in every Linear of the block (False in Llama and nanoGPT's default)
        norm_first  pre-LN (True) or post-LN
        norm_eps    the norms' epsilon (LayerNorm 1e-5; Llama's RMSNorm 1e-6)
        dropout     after attention weights, inside the FFN and on each residual branch
    """

    norm: str = "layernorm"
    ffn: str = "mlp"
    activation: str = "gelu"
    bias: bool = True
    norm_first: bool = True
    norm_eps: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self):
        _check_block_fields(self)

    def replace(self, **changes) -> "BlockSpec":
        return dataclasses.replace(self, **changes)


def _check_block_fields(c) -> None:
    choices = {"norm": ("layernorm", "rmsnorm"), "ffn": ("mlp", "swiglu"), "activation": ("relu", "gelu", "gelu_tanh", "silu")}
    for name, allowed in choices.items():
        if getattr(c, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(c, name)!r}")
    if not (isinstance(c.norm_eps, float) and c.norm_eps > 0):
        raise ValueError(f"norm_eps must be a positive float, got {c.norm_eps!r}")
    if not 0.0 <= c.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {c.dropout}")


@dataclass(frozen=True)
class GPTConfig(_Config):
    """A decoder-only language model (GPT). The defaults build GPT-2's architecture; the fields after
    ``tie_weights`` switch on what Llama-style models changed (see the "llama-*" presets):

        norm="rmsnorm"  ffn="swiglu" (activation="silu")  positional="rope" (rope_pairing, rope_base)
        n_kv_heads < n_heads (GQA; 1 = MQA)  bias=False  tie_weights=False
        scaled_init=True: residual output projections start at std 0.02 / sqrt(2 n_layers) (GPT-2)
    """

    POSITIONALS = ("sinusoidal", "learned", "rope")
    ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")

    vocab_size: int = 65
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    max_len: int = 128
    norm_first: bool = True
    activation: str = "gelu"
    positional: str = "learned"
    tie_weights: bool = True  # output projection shares the token embedding matrix
    norm: str = "layernorm"
    ffn: str = "mlp"
    bias: bool = True
    norm_eps: float = 1e-5
    rope_pairing: str = "half"
    rope_base: float = 10000.0
    scaled_init: bool = False

    def __post_init__(self):
        self._check_common()
        _check_block_fields(self)
        if self.vocab_size < 1 or self.n_layers < 1:
            raise ValueError(f"vocab_size and n_layers must be at least 1, got {self.vocab_size} and {self.n_layers}")
        if self.rope_pairing not in ("half", "interleaved"):
            raise ValueError(f"rope_pairing must be one of ('half', 'interleaved'), got {self.rope_pairing!r}")
        if self.positional == "rope" and self.head_size % 2:
            raise ValueError(f"RoPE needs an even head size: d_model={self.d_model} / n_heads={self.n_heads} "
                             f"gives {self.head_size}")

    def block_spec(self) -> BlockSpec:
        """The BlockSpec every block of this GPT is built from."""
        return BlockSpec(norm=self.norm, ffn=self.ffn, activation=self.activation, bias=self.bias,
                         norm_first=self.norm_first, norm_eps=self.norm_eps, dropout=self.dropout)


GPTConfig.PRESETS = {
    "tiny": dict(d_model=32, n_heads=2, n_layers=1, d_ff=64, max_len=64),
    "cpu": dict(d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=128),
    "gpu": dict(d_model=384, n_heads=6, n_layers=6, d_ff=1536, max_len=256),
    "gpt2-small": dict(vocab_size=50257, d_model=768, n_heads=12, n_layers=12, d_ff=3072, max_len=1024),
    # ~110M parameters on one GPU (lesson 14): GPT-2 small's width, 10 of its 12 blocks, GPT-2's vocabulary
    # rounded up to a multiple of 64 (faster matrix products), no dropout
    "gpt-100m": dict(vocab_size=50304, d_model=768, n_heads=12, n_layers=10, d_ff=3072, max_len=1024,
                     dropout=0.0, scaled_init=True),
}
# Llama-style: RMSNorm, SwiGLU (d_ff ~ 2/3 of the MLP's 4C, so the FFN keeps its parameters), RoPE,
# grouped-query attention, no biases, untied output head.
LLAMA_STYLE = dict(norm="rmsnorm", ffn="swiglu", activation="silu", positional="rope", bias=False,
                   tie_weights=False, norm_eps=1e-6)
GPTConfig.PRESETS.update({
    "llama-cpu": dict(LLAMA_STYLE, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=172, max_len=128),
    "llama-gpu": dict(LLAMA_STYLE, d_model=384, n_heads=6, n_kv_heads=2, n_layers=6, d_ff=1024, max_len=256),
    # ~112M parameters, Llama-style, untied head (lesson 14)
    "llama-100m": dict(LLAMA_STYLE, vocab_size=32000, d_model=768, n_heads=12, n_kv_heads=4, n_layers=10,
                       d_ff=2048, max_len=1024, dropout=0.0),
    "llama2-7b": dict(LLAMA_STYLE, vocab_size=32000, d_model=4096, n_heads=32, n_layers=32, d_ff=11008,
                      max_len=4096, norm_eps=1e-5),
})


@dataclass(frozen=True)
class EncoderConfig(_Config):
    """An encoder-only sequence classifier (BERT-style)."""

    vocab_size: int = 32
    n_classes: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.0
    max_len: int = 64
    norm_first: bool = True
    activation: str = "gelu"
    positional: str = "learned"
    pooling: str = "cls"      # "cls": the vector of a [CLS] token put in front; "mean": masked mean
    pad_id: int = 0
    cls_id: int = 1           # tfmlib.data.Vocab's <bos> doubles as [CLS]
    n_token_types: int = 0    # > 0: a learned segment (token-type) embedding is added (BERT: 2)
    embed_norm: bool = False  # a LayerNorm right after the summed embeddings (BERT)
    final_norm: bool = True   # the stack's final LayerNorm (pre-LN needs it; BERT's post-LN has none)
    norm_eps: float = 1e-5    # every LayerNorm's epsilon (BERT: 1e-12)

    def __post_init__(self):
        self._check_common()
        for name in ("vocab_size", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_classes", "n_token_types"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not (isinstance(self.norm_eps, float) and self.norm_eps > 0):
            raise ValueError(f"norm_eps must be a positive float, got {self.norm_eps!r}")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        for name in ("pad_id", "cls_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} must be a token id in [0, {self.vocab_size - 1}], got {getattr(self, name)}")


EncoderConfig.PRESETS = {
    "tiny": dict(d_model=32, n_heads=2, n_layers=1, d_ff=64, max_len=64),
    "cpu": dict(d_model=64, n_heads=4, n_layers=2, d_ff=128, max_len=64),
    "gpu": dict(d_model=128, n_heads=8, n_layers=4, d_ff=512, max_len=128),
    "bert-base": dict(vocab_size=30522, d_model=768, n_heads=12, n_layers=12, d_ff=3072, max_len=512,
                      dropout=0.1, norm_first=False),  # BERT-base's shape (post-LN, GELU, learned positions)
}


def preset_for_device(device: torch.device | str | None = None) -> str:
    """'gpu' on CUDA, otherwise 'cpu' (MPS laptops get the CPU-sized preset)."""
    device = torch.device(device) if device is not None else get_device()
    return "gpu" if device.type == "cuda" else "cpu"
