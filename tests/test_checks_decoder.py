"""The lesson-08 checks pass the reference solutions, say "not implemented" for stubs, and
fail realistic wrong implementations with the hint that names the mistake."""
import math

import pytest
import torch
import torch.nn as nn

from helpers import verdict
from tfmlib.checks.decoder import check_cross_attention, check_decoder_block, check_shift_right
from tfmlib.layers import FeedForward, LayerNorm
from tfmlib.masks import causal_mask
from tfmlib.multihead import MultiHeadAttention


def _verdict(result, status, hint=None):
    verdict(result, status, hint, in_hint=True)


# ------------------------------------------------------------------ shift_right
def shift_right(tgt, bos_id):
    bos = torch.full_like(tgt[:, :1], bos_id)
    return torch.cat([bos, tgt[:, :-1]], dim=1)


def shift_right_stub(tgt, bos_id):
    raise NotImplementedError("Put BOS in front, drop the last token.")


def not_shifted(tgt, bos_id):
    return tgt.clone()


def shifted_left(tgt, bos_id):
    return torch.cat([tgt[:, 1:], torch.full_like(tgt[:, :1], bos_id)], dim=1)


def rolled(tgt, bos_id):
    return torch.roll(tgt, 1, dims=1)


def pad_instead_of_bos(tgt, bos_id):
    return nn.functional.pad(tgt[:, :-1], (1, 0), value=0)


def keeps_last_token(tgt, bos_id):
    return torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt], dim=1)


def in_place(tgt, bos_id):
    tgt[:, 1:] = tgt[:, :-1].clone()
    tgt[:, 0] = bos_id
    return tgt


def along_batch(tgt, bos_id):
    return torch.cat([torch.full_like(tgt[:1], bos_id), tgt[:-1]], dim=0)


def float_ids(tgt, bos_id):
    return shift_right(tgt, bos_id).float()


def test_shift_right_reference_and_stub():
    _verdict(check_shift_right(shift_right), "passed")
    _verdict(check_shift_right(shift_right_stub), "not implemented")
    assert "not implemented yet" in repr(check_shift_right(shift_right_stub))


@pytest.mark.parametrize("fn, hint", [
    (not_shifted, "not shifted"),
    (shifted_left, "shifted left"),
    (rolled, "torch.roll"),
    (pad_instead_of_bos, "must hold bos_id"),
    (keeps_last_token, "drop the last target token"),
    (in_place, "do not modify tgt in place"),
    (along_batch, "time axis"),
    (float_ids, "integers"),
])
def test_shift_right_mistakes(fn, hint):
    _verdict(check_shift_right(fn), "failed", hint)


# -------------------------------------------------------------- cross-attention
def _heads(t, H):
    B, L, C = t.shape
    return t.view(B, L, H, C // H).transpose(1, 2)  # (B, L, C) -> (B, H, L, hs)


def cross_attention(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None, *, kv_from_decoder=False,
                    swap=False, scale=None, causal=False, mask_mode="ok", softmax_dim=-1, use_wo=True,
                    detach_memory=False):
    """Reference written by hand; the keyword switches reproduce learners' mistakes."""
    if detach_memory:
        memory = memory.detach()
    q_src, kv_src = (memory, x_dec) if swap else (x_dec, x_dec if kv_from_decoder else memory)
    B, T, C = q_src.shape
    S, hs = kv_src.shape[1], C // n_heads
    q, k, v = _heads(q_src @ W_q, n_heads), _heads(kv_src @ W_k, n_heads), _heads(kv_src @ W_v, n_heads)
    attn_scores = q @ k.transpose(-2, -1) / (math.sqrt(hs) if scale is None else scale)  # (B, H, T, S)
    if memory_mask is not None and mask_mode != "ignore" and not swap:
        attn_scores = attn_scores.masked_fill(memory_mask if mask_mode == "inverted" else ~memory_mask, float("-inf"))
    if causal:
        attn_scores = attn_scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), float("-inf"))
    attn_weights = torch.softmax(attn_scores, dim=softmax_dim)
    context = (attn_weights @ v).transpose(1, 2).reshape(B, T, C)  # (B, H, T, hs) -> (B, T, C)
    return context @ W_o if use_wo else context


def _variant(**switches):
    def fn(*args):
        return cross_attention(*args, **switches)
    return fn


def cross_attention_stub(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None):
    raise NotImplementedError("Q from x_dec, K and V from memory.")


def cross_attention_with_mha(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None):
    """A different but correct route: torch's fused kernel."""
    q, k, v = _heads(x_dec @ W_q, n_heads), _heads(memory @ W_k, n_heads), _heads(memory @ W_v, n_heads)
    context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask)
    B, T, C = x_dec.shape
    return context.transpose(1, 2).reshape(B, T, C) @ W_o


def cross_attention_returns_tuple(*args):
    return cross_attention(*args), None


def test_cross_attention_reference_and_stub():
    _verdict(check_cross_attention(cross_attention), "passed")
    _verdict(check_cross_attention(cross_attention_with_mha), "passed")
    _verdict(check_cross_attention(cross_attention_stub), "not implemented")


@pytest.mark.parametrize("fn, hint", [
    (_variant(swap=True), "keys/values taken from the wrong side"),
    (_variant(kv_from_decoder=True), "that is self-attention"),
    (_variant(scale=1.0), "divide the scores by sqrt(hs)"),
    (_variant(scale=4.0), "not sqrt(C)"),
    (_variant(causal=True), "no causal mask"),
    (_variant(mask_mode="ignore"), "apply memory_mask"),
    (_variant(mask_mode="inverted"), "True means 'may attend'"),
    (_variant(softmax_dim=-2), "softmax over the last axis"),
    (_variant(use_wo=False), "output projection W_o"),
    (_variant(detach_memory=True), "the encoder learns only from the gradient"),
    (cross_attention_returns_tuple, "not a tuple"),
])
def test_cross_attention_mistakes(fn, hint):
    _verdict(check_cross_attention(fn), "failed", hint)


def test_cross_attention_wrong_head_split():
    def view_without_transpose(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None):
        B, T, C = x_dec.shape
        S, hs = memory.shape[1], C // n_heads
        q = (x_dec @ W_q).reshape(B, n_heads, T, hs)
        k, v = (memory @ W_k).reshape(B, n_heads, S, hs), (memory @ W_v).reshape(B, n_heads, S, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
        if memory_mask is not None:
            scores = scores.masked_fill(~memory_mask, float("-inf"))
        context = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, C)
        return context @ W_o

    _verdict(check_cross_attention(view_without_transpose), "failed", "split heads on the feature axis")


# ---------------------------------------------------------------- decoder block
class DecoderBlockSolution(nn.Module):
    """The exercise's given __init__ plus the reference forward; subclasses below break one thing."""

    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff)
        self.norm1, self.norm2, self.norm3 = LayerNorm(d_model), LayerNorm(d_model), LayerNorm(d_model)

    def self_mask(self, x, tgt_mask):
        causal = causal_mask(x.shape[1])
        return causal if tgt_mask is None else tgt_mask & causal

    def cross(self, h, memory, memory_mask):
        return self.cross_attn(h, memory, memory, mask=memory_mask)[0]

    def sublayer(self, x, f, norm):
        return x + f(norm(x)) if self.norm_first else norm(x + f(x))

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        mask = self.self_mask(x, tgt_mask)
        x = self.sublayer(x, lambda h: self.self_attn(h, mask=mask)[0], self.norm1)
        x = self.sublayer(x, lambda h: self.cross(h, memory, memory_mask), self.norm2)
        return self.sublayer(x, self.ffn, self.norm3)


class BlockStub(DecoderBlockSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        raise NotImplementedError("Three sublayers.")


class BlockIsCausalFlag(DecoderBlockSolution):
    """Correct too: lets MultiHeadAttention build the causal mask."""

    def self_mask(self, x, tgt_mask):
        return tgt_mask

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        if self.norm_first:
            x = x + self.self_attn(self.norm1(x), mask=tgt_mask, is_causal=True)[0]
            x = x + self.cross_attn(self.norm2(x), memory, memory, mask=memory_mask)[0]
            return x + self.ffn(self.norm3(x))
        x = self.norm1(x + self.self_attn(x, mask=tgt_mask, is_causal=True)[0])
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask)[0])
        return self.norm3(x + self.ffn(x))


class NoCausal(DecoderBlockSolution):
    def self_mask(self, x, tgt_mask):
        return tgt_mask


class CausalOnlyWithoutPadding(DecoderBlockSolution):
    def self_mask(self, x, tgt_mask):
        return causal_mask(x.shape[1]) if tgt_mask is None else tgt_mask


class IgnoresTgtMask(DecoderBlockSolution):
    def self_mask(self, x, tgt_mask):
        return causal_mask(x.shape[1])


class NoResidual(DecoderBlockSolution):
    def sublayer(self, x, f, norm):
        return f(norm(x)) if self.norm_first else norm(f(x))


class NoResidualInFFN(DecoderBlockSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        mask = self.self_mask(x, tgt_mask)
        x = self.sublayer(x, lambda h: self.self_attn(h, mask=mask)[0], self.norm1)
        x = self.sublayer(x, lambda h: self.cross(h, memory, memory_mask), self.norm2)
        return self.ffn(self.norm3(x)) if self.norm_first else self.norm3(self.ffn(x))


class AlwaysPreLN(DecoderBlockSolution):
    def sublayer(self, x, f, norm):
        return x + f(norm(x))


class AlwaysPostLN(DecoderBlockSolution):
    def sublayer(self, x, f, norm):
        return norm(x + f(x))


class NormsSwappedByFlag(DecoderBlockSolution):
    def sublayer(self, x, f, norm):
        return norm(x + f(x)) if self.norm_first else x + f(norm(x))


class KVFromDecoder(DecoderBlockSolution):
    def cross(self, h, memory, memory_mask):
        return self.cross_attn(h, h, h)[0]


class KVSwapped(DecoderBlockSolution):
    def cross(self, h, memory, memory_mask):
        return self.cross_attn(memory, h, h)[0]


class CrossFirst(DecoderBlockSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        mask = self.self_mask(x, tgt_mask)
        x = self.sublayer(x, lambda h: self.cross(h, memory, memory_mask), self.norm2)
        x = self.sublayer(x, lambda h: self.self_attn(h, mask=mask)[0], self.norm1)
        return self.sublayer(x, self.ffn, self.norm3)


class NormalisesMemory(DecoderBlockSolution):
    def cross(self, h, memory, memory_mask):
        m = self.norm2(memory)
        return self.cross_attn(h, m, m, mask=memory_mask)[0]


class OneNormForAll(DecoderBlockSolution):
    def sublayer(self, x, f, norm):
        return super().sublayer(x, f, self.norm1)


class IgnoresMemoryMask(DecoderBlockSolution):
    def cross(self, h, memory, memory_mask):
        return self.cross_attn(h, memory, memory)[0]


class DetachesMemory(DecoderBlockSolution):
    def cross(self, h, memory, memory_mask):
        return super().cross(h, memory.detach(), memory_mask)


class RenamedSubmodules(DecoderBlockSolution):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first)
        self.ln1 = self.norm1
        del self.norm1


def test_decoder_block_reference_and_stub():
    _verdict(check_decoder_block(DecoderBlockSolution), "passed")
    _verdict(check_decoder_block(BlockIsCausalFlag), "passed")
    _verdict(check_decoder_block(BlockStub), "not implemented")


@pytest.mark.parametrize("cls, hint", [
    (NoCausal, "missing its causal mask"),
    (CausalOnlyWithoutPadding, "missing its causal mask"),
    (IgnoresTgtMask, "pass tgt_mask"),
    (NoResidual, "a residual connection is missing"),
    (NoResidualInFFN, "a residual connection is missing"),
    (AlwaysPreLN, "normalise AFTER the residual add"),
    (AlwaysPostLN, "with norm_first=True (pre-LN)"),
    (NormsSwappedByFlag, "norm in the wrong place"),
    (KVFromDecoder, "keys and values come from memory"),
    (KVSwapped, "queries from the decoder stream"),
    (CrossFirst, "the order is masked self-attention"),
    (NormalisesMemory, "normalise only the decoder stream"),
    (OneNormForAll, "its own LayerNorm"),
    (IgnoresMemoryMask, "pass memory_mask"),
    (DetachesMemory, "the encoder learns only from the gradient"),
    (RenamedSubmodules, "keep the given __init__"),
])
def test_decoder_block_mistakes(cls, hint):
    _verdict(check_decoder_block(cls), "failed", hint)


def test_decoder_block_wants_the_class():
    _verdict(check_decoder_block(DecoderBlockSolution(16, 4, 32)), "failed", "pass the class")
