"""Copy weights from PyTorch's reference modules into tfmlib's, so that the two
can be compared number for number (the lessons and the tests do this).

    mine = MultiHeadAttention(64, 4); ref = nn.MultiheadAttention(64, 4, batch_first=True)
    copy_mha_from_torch(mine, ref)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .decoder import Decoder, DecoderBlock
from .encoder import Encoder, EncoderBlock
from .layers import LayerNorm
from .multihead import MultiHeadAttention
from .transformer import Transformer

__all__ = ["copy_mha_from_torch", "copy_layernorm_from_torch", "copy_encoder_layer_from_torch",
           "copy_decoder_layer_from_torch", "copy_transformer_from_torch"]


def _copy(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(f"cannot copy {what}: tfmlib expects shape {tuple(dst.shape)}, PyTorch has {tuple(src.shape)}")
    dst.copy_(src)


@torch.no_grad()
def copy_mha_from_torch(mine: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    """nn.MultiheadAttention packs W_Q, W_K, W_V into one (3C, C) in_proj_weight; split it."""
    if mine.n_kv_heads != mine.n_heads:
        raise ValueError("nn.MultiheadAttention has no grouped-query variant: use n_kv_heads == n_heads")
    wq, wk, wv = ref.in_proj_weight.chunk(3, dim=0)  # (3C, C) -> 3 x (C, C)
    for lin, w, name in ((mine.q_proj, wq, "W_Q"), (mine.k_proj, wk, "W_K"), (mine.v_proj, wv, "W_V")):
        _copy(lin.weight, w, name)
    if ref.in_proj_bias is not None:
        for lin, b in zip((mine.q_proj, mine.k_proj, mine.v_proj), ref.in_proj_bias.chunk(3)):
            _copy(lin.bias, b, "in-projection bias")
    _copy(mine.out_proj.weight, ref.out_proj.weight, "W_O")
    if ref.out_proj.bias is not None:
        _copy(mine.out_proj.bias, ref.out_proj.bias, "W_O bias")


@torch.no_grad()
def copy_layernorm_from_torch(mine: LayerNorm, ref: nn.LayerNorm) -> None:
    _copy(mine.weight, ref.weight, "LayerNorm weight")
    _copy(mine.bias, ref.bias, "LayerNorm bias")


@torch.no_grad()
def _copy_ffn(mine, ref) -> None:
    _copy(mine.ffn.linear1.weight, ref.linear1.weight, "linear1 weight")
    _copy(mine.ffn.linear1.bias, ref.linear1.bias, "linear1 bias")
    _copy(mine.ffn.linear2.weight, ref.linear2.weight, "linear2 weight")
    _copy(mine.ffn.linear2.bias, ref.linear2.bias, "linear2 bias")


def copy_encoder_layer_from_torch(mine: EncoderBlock, ref: nn.TransformerEncoderLayer) -> None:
    copy_mha_from_torch(mine.self_attn, ref.self_attn)
    _copy_ffn(mine, ref)
    copy_layernorm_from_torch(mine.attn_sublayer.norm, ref.norm1)
    copy_layernorm_from_torch(mine.ffn_sublayer.norm, ref.norm2)


def copy_decoder_layer_from_torch(mine: DecoderBlock, ref: nn.TransformerDecoderLayer) -> None:
    copy_mha_from_torch(mine.self_attn, ref.self_attn)
    copy_mha_from_torch(mine.cross_attn, ref.multihead_attn)
    _copy_ffn(mine, ref)
    copy_layernorm_from_torch(mine.self_attn_sublayer.norm, ref.norm1)
    copy_layernorm_from_torch(mine.cross_attn_sublayer.norm, ref.norm2)
    copy_layernorm_from_torch(mine.ffn_sublayer.norm, ref.norm3)


def _copy_stack(mine: Encoder | Decoder, ref, copy_layer) -> None:
    if len(mine.layers) != len(ref.layers):
        raise ValueError(f"layer counts differ: tfmlib has {len(mine.layers)}, PyTorch has {len(ref.layers)}")
    for m, r in zip(mine.layers, ref.layers):
        copy_layer(m, r)
    if ref.norm is not None:
        copy_layernorm_from_torch(mine.norm, ref.norm)


def copy_transformer_from_torch(mine: Transformer, ref: nn.Transformer) -> None:
    _copy_stack(mine.encoder, ref.encoder, copy_encoder_layer_from_torch)
    _copy_stack(mine.decoder, ref.decoder, copy_decoder_layer_from_torch)
