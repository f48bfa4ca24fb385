"""Llama-format weights in tfmlib's GPT: the config and state-dict names of Hugging Face's
Llama (LlamaConfig / LlamaForCausalLM) mapped onto GPTConfig and GPT's own modules.

    cfg = config_from_llama(hf_model.config)          # a GPTConfig with the Llama-style options
    model = GPT(cfg); load_llama_state_dict(model, hf_model.state_dict())

Nothing here imports ``transformers``: any object with LlamaConfig's attribute names (or a dict
of them) and any state dict with Llama's parameter names will do. Hugging Face stores the query
and key rows in the "half" RoPE layout; a model built with ``rope_pairing="interleaved"`` gets
them permuted into neighbour pairs, which gives the same outputs (the tests check both).

Shape legend: C d_model, H query heads, H_kv key/value heads, hs head size, F d_ff, V vocab.
"""
from __future__ import annotations

import torch

from .config import GPTConfig
from .gpt import GPT

__all__ = ["config_from_llama", "load_llama_state_dict", "half_to_interleaved"]


def config_from_llama(hf_config, **overrides) -> GPTConfig:
    """GPTConfig for a LlamaConfig (or a dict with its keys); ``overrides`` replace fields."""
    get = hf_config.get if isinstance(hf_config, dict) else (lambda k, d=None: getattr(hf_config, k, d))
    rope_theta = get("rope_theta", None)
    if rope_theta is None:  # newer configs keep it under rope_parameters
        rope_theta = (get("rope_parameters", None) or {}).get("rope_theta", 10000.0)
    if get("hidden_act", "silu") != "silu":
        raise ValueError(f"tfmlib's SwiGLU gates with SiLU; this Llama config uses {get('hidden_act')!r}")
    if get("attention_bias", False) != get("mlp_bias", False):
        raise ValueError("tfmlib's bias option covers attention and MLP together; this config sets "
                         f"attention_bias={get('attention_bias')} but mlp_bias={get('mlp_bias')}")
    fields = dict(
        vocab_size=get("vocab_size"), d_model=get("hidden_size"), n_heads=get("num_attention_heads"),
        n_kv_heads=get("num_key_value_heads", None) or get("num_attention_heads"),
        n_layers=get("num_hidden_layers"), d_ff=get("intermediate_size"),
        max_len=get("max_position_embeddings"), dropout=float(get("attention_dropout", 0.0)),
        norm="rmsnorm", ffn="swiglu", activation="silu", positional="rope", bias=bool(get("attention_bias", False)),
        norm_eps=float(get("rms_norm_eps", 1e-6)), rope_base=float(rope_theta),
        tie_weights=bool(get("tie_word_embeddings", False)))
    head_dim = get("head_dim", None)
    if head_dim is not None and head_dim * fields["n_heads"] != fields["d_model"]:
        raise ValueError(f"tfmlib needs head_dim * n_heads == hidden_size, got head_dim={head_dim}, "
                         f"num_attention_heads={fields['n_heads']}, hidden_size={fields['d_model']}")
    return GPTConfig(**{**fields, **overrides})


def half_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a query/key projection (n_heads * hs, C) from the "half" RoPE layout
    (pairs j, j + hs/2) to the "interleaved" one (pairs 2k, 2k + 1), head by head."""
    rows, C = weight.shape
    hs = rows // n_heads
    order = torch.stack([torch.arange(hs // 2), torch.arange(hs // 2) + hs // 2], dim=-1).flatten()  # (hs,)
    return weight.view(n_heads, hs, C)[:, order].reshape(rows, C)  # (H, hs, C) -> (H * hs, C)


@torch.no_grad()
def load_llama_state_dict(model: GPT, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a Llama state dict (Hugging Face names, with or without the "model." prefix) into
    ``model``; raises ValueError naming the tensor and both shapes on any mismatch."""
    c = model.config
    if c.positional != "rope" or c.norm != "rmsnorm" or c.ffn != "swiglu":
        raise ValueError("the model must be Llama-style (positional='rope', norm='rmsnorm', ffn='swiglu'), got "
                         f"positional={c.positional!r}, norm={c.norm!r}, ffn={c.ffn!r}")
    sd = {k.removeprefix("model."): v for k, v in state_dict.items()}
    interleave = c.rope_pairing == "interleaved"
    kv_heads = c.n_kv_heads or c.n_heads

    def put(dst: torch.Tensor, name: str, heads: int | None = None) -> None:
        if name not in sd:
            raise ValueError(f"the state dict has no {name!r}")
        src = sd[name]
        if heads is not None and interleave:
            src = half_to_interleaved(src.reshape(src.shape[0], -1), heads).reshape(src.shape)  # weight or bias
        if dst.shape != src.shape:
            raise ValueError(f"cannot copy {name}: tfmlib expects shape {tuple(dst.shape)}, got {tuple(src.shape)}")
        dst.copy_(src)

    put(model.tok_embed.weight, "embed_tokens.weight")
    for i, block in enumerate(model.blocks):
        p, attn = f"layers.{i}.", block.self_attn
        for mine, theirs, heads in ((attn.q_proj, "q_proj", c.n_heads), (attn.k_proj, "k_proj", kv_heads),
                                    (attn.v_proj, "v_proj", None), (attn.out_proj, "o_proj", None)):
            put(mine.weight, f"{p}self_attn.{theirs}.weight", heads)
            if mine.bias is not None:
                put(mine.bias, f"{p}self_attn.{theirs}.bias", heads)
        for name in ("gate_proj", "up_proj", "down_proj"):
            put(getattr(block.ffn, name).weight, f"{p}mlp.{name}.weight")
            if getattr(block.ffn, name).bias is not None:
                put(getattr(block.ffn, name).bias, f"{p}mlp.{name}.bias")
        put(block.attn_sublayer.norm.weight, f"{p}input_layernorm.weight")
        put(block.ffn_sublayer.norm.weight, f"{p}post_attention_layernorm.weight")
    put(model.norm.weight, "norm.weight")
    if not c.tie_weights:
        put(model.lm_head.weight, "lm_head.weight" if "lm_head.weight" in sd else "embed_tokens.weight")
