"""Checks for lesson 08 (the decoder and cross-attention).

    check_shift_right(shift_right)          shift_right(tgt (B, T), bos_id) -> decoder input (B, T)
    check_cross_attention(cross_attention)  cross_attention(x_dec (B, T, C), memory (B, S, C),
                                            W_q, W_k, W_v, W_o (C, C), n_heads, memory_mask=None) -> (B, T, C)
    check_decoder_block(MyDecoderBlock)     the class; forward(x, memory, tgt_mask=None, memory_mask=None),
                                            pre-LN (norm_first=True) and post-LN (norm_first=False)

Each compares the learner's code with tfmlib's reference (MultiHeadAttention,
DecoderBlock) and recognises the usual mistakes by computing what they return.

Shape legend: B batch, T target length, S source length, C d_model, H heads, hs head size.
Masks: bool, True = may attend; memory_mask broadcasts to (B, H, T, S).
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn

from ..decoder import DecoderBlock
from ..masks import causal_mask
from ..multihead import MultiHeadAttention
from .attention import probe_attention_core
from .core import (CheckFailed, call, check, copy_reference_weights, expect_close,
                   expect_tensor, grad_of, vary_norms)
from .probes import explain_failure

__all__ = ["check_shift_right", "check_cross_attention", "check_decoder_block"]


def _compare(actual, expected: torch.Tensor, what: str, mistakes: list[tuple[str, torch.Tensor]],
             shape_hint: str | None = None) -> None:
    expect_close(actual, expected, what, mistakes, shape_hint=shape_hint)


def _padding(lengths: list[int], S: int) -> torch.Tensor:
    """(B, 1, 1, S) key mask: True for the first lengths[b] positions of row b."""
    return (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]  # (B, S) -> (B, 1, 1, S)


def _no_grad_hint(name: str) -> str:
    hint = "keep the computation differentiable: no .detach(), .item() or .numpy()"
    if name == "memory":
        hint += " (the encoder learns only from the gradient that cross-attention sends into memory)"
    return hint + "."


# ---------------------------------------------------------------- shift_right
def _reference_shift_right(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[BOS] + tgt[:, :-1]. (Private: tfmlib.data will hold the shared version.)"""
    bos = torch.full_like(tgt[:, :1], bos_id)      # (B, 1)
    return torch.cat([bos, tgt[:, :-1]], dim=1)    # (B, 1) + (B, T-1) -> (B, T)


NOT_SHIFTED = ("the targets are not shifted: the decoder input must be [BOS] + tgt[:, :-1], otherwise "
               "position t is shown the very token it has to predict.")
SHIFTED_LEFT = ("you shifted left (dropped the first token): shift RIGHT, i.e. put BOS in front and drop "
                "the LAST token, so that position t sees only tokens < t.")
ROLLED = "torch.roll wraps the last token round to position 0: put bos_id there instead."
NO_BOS = "position 0 of the decoder input must hold bos_id (the start-of-sequence token)."
BATCH_AXIS = "shift along the time axis (dim 1), not along the batch axis (dim 0)."


@check("shift_right")
def check_shift_right(fn) -> int:
    cases = [
        ("a (2, 4) batch", torch.tensor([[5, 6, 7, 8], [9, 10, 11, 2]]), 1),
        ("a batch of one with T = 1", torch.tensor([[7]]), 1),
        ("a padded target with bos_id=3", torch.tensor([[4, 5, 6, 2, 0, 0], [8, 9, 10, 11, 12, 2]]), 3),
    ]
    for what, tgt, bos_id in cases:
        before = tgt.clone()
        out = call(fn, tgt, bos_id)
        expected = _reference_shift_right(before, bos_id)
        if not torch.equal(tgt, before):
            raise CheckFailed(f"on {what}: your function changed its input tgt",
                              "do not modify tgt in place (the labels are tgt itself): build a new tensor.")
        out = expect_tensor(out, f"decoder input for {what}")
        B, T = before.shape
        if tuple(out.shape) == (B, T + 1):
            raise CheckFailed(f"decoder input for {what}: expected shape {(B, T)}, got {tuple(out.shape)}",
                              "keep the length T: after putting BOS in front, drop the last target token.")
        if out.dtype != torch.long:
            raise CheckFailed(f"decoder input for {what}: expected dtype torch.long, got {out.dtype}",
                              "token ids stay integers: use torch.full_like(tgt[:, :1], bos_id) for the BOS column.")
        rest = before[:, 1:]
        mistakes = [
            (NOT_SHIFTED, before),
            (SHIFTED_LEFT, torch.cat([rest, torch.full_like(before[:, :1], bos_id)], 1)),
            (SHIFTED_LEFT, torch.cat([rest, torch.zeros_like(before[:, :1])], 1)),
            (ROLLED, torch.roll(before, 1, dims=1)),
            (NO_BOS, torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], 1)),
            (NO_BOS, torch.cat([before[:, :1], before[:, :-1]], 1)),
        ]
        if B > 1:
            mistakes.append((BATCH_AXIS, torch.cat([torch.full_like(before[:1], bos_id), before[:-1]], 0)))
        _compare(out, expected.float(), f"decoder input for {what}",
                 [(h, w.float()) for h, w in mistakes if w.shape == out.shape])
    return len(cases)


# ------------------------------------------------------------ cross-attention
def _reference_cross_attention(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None):
    """tfmlib's MultiHeadAttention with the given (C, C) matrices (y = x @ W, no biases)."""
    mha = MultiHeadAttention(x_dec.shape[-1], n_heads, bias=False)
    with torch.no_grad():
        for lin, W in ((mha.q_proj, W_q), (mha.k_proj, W_k), (mha.v_proj, W_v), (mha.out_proj, W_o)):
            lin.weight.copy_(W.T)  # nn.Linear computes x @ weight.T
    return mha(x_dec, memory, memory, mask=memory_mask)[0]


def _wrong_cross_attention(q_from, kv_from, W_q, W_k, W_v, W_o, n_heads, mask=None, *, scale=None,
                           causal=False, softmax_dim=-1, invert_mask=False, split_by_view=False, use_wo=True):
    """A configurable hand-written attention that reproduces the typical mistakes."""
    B, T, C = q_from.shape
    S, hs = kv_from.shape[1], C // n_heads

    def heads(t):
        if split_by_view:
            return t.reshape(B, n_heads, t.shape[1], hs)                    # wrong: slices tokens, not features
        return t.view(B, t.shape[1], n_heads, hs).transpose(1, 2)           # (B, L, C) -> (B, H, L, hs)

    q, k, v = heads(q_from @ W_q), heads(kv_from @ W_k), heads(kv_from @ W_v)
    attn_scores = q @ k.transpose(-2, -1) / (math.sqrt(hs) if scale is None else scale)  # (B, H, T, S)
    if mask is not None:
        attn_scores = attn_scores.masked_fill(mask if invert_mask else ~mask, float("-inf"))
    if causal:
        attn_scores = attn_scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), float("-inf"))
    attn_weights = torch.softmax(attn_scores, dim=softmax_dim)
    context = (attn_weights @ v).transpose(1, 2).reshape(B, T, C)           # (B, H, T, hs) -> (B, T, C)
    return context @ W_o if use_wo else context


SHAPE = "the output has the decoder's shape (B, T, C): one vector per target position."
SWAPPED = ("keys/values taken from the wrong side: queries come from the decoder (x_dec), keys and values "
           "from the encoder output (memory). The output must have the decoder's length T.")
SELF_ATTN = "that is self-attention: in cross-attention the keys and values come from memory, not from x_dec."
NO_SCALE = "divide the scores by sqrt(hs), the head size C // n_heads."
SCALE_C = "scale by sqrt(hs) = sqrt(C // n_heads), the width of one head, not sqrt(C)."
SOFTMAX_AXIS = "take the softmax over the last axis (the S source positions), so that each query's weights sum to 1."
HEAD_SPLIT = "split heads on the feature axis: view (B, L, H, hs), then transpose(1, 2) to (B, H, L, hs)."
NO_WO = "after merging the heads, apply the output projection W_o."
CAUSAL = ("cross-attention has no causal mask: every target position may read the whole source "
          "(only self-attention in the decoder is causal).")
MASK_IGNORED = "apply memory_mask: padded source positions (mask False) must get weight 0."
MASK_INVERTED = "True means 'may attend': fill the scores with -inf where the mask is False (~mask)."


@check("cross_attention")
def check_cross_attention(fn) -> int:
    C = 16
    cases = [  # (what, B, T, S, H, source lengths or None)
        ("B=2, T=4, S=6, 4 heads", 2, 4, 6, 4, None),
        ("B=2, T=S=5, 2 heads", 2, 5, 5, 2, None),
        ("a batch of one with T=1, S=3", 1, 1, 3, 4, None),
        ("source padding (lengths 7, 4, 2), T=4, S=7", 3, 4, 7, 4, [7, 4, 2]),
        ("one head, T=3, S=5", 2, 3, 5, 1, None),
    ]
    for what, B, T, S, H, lengths in cases:
        x_dec, memory = torch.randn(B, T, C), torch.randn(B, S, C)
        W_q, W_k, W_v, W_o = (torch.randn(C, C) / math.sqrt(C) for _ in range(4))
        mask = None if lengths is None else _padding(lengths, S)
        expected = _reference_cross_attention(x_dec, memory, W_q, W_k, W_v, W_o, H, mask)
        eye = torch.eye(8)
        probe = explain_failure(lambda: probe_attention_core(
            lambda x_q, x_kv, m: fn(x_q, x_kv, eye, eye, eye, eye, 1, m), "your cross_attention"))
        with probe:
            out = expect_tensor(call(fn, x_dec, memory, W_q, W_k, W_v, W_o, H, mask), f"output for {what}")
        if S != T and tuple(out.shape) == (B, S, C):
            raise CheckFailed(f"output for {what}: expected shape {(B, T, C)}, got {tuple(out.shape)}", SWAPPED)
        Ws = (W_q, W_k, W_v, W_o)
        mistakes = [(SELF_ATTN, partial(_wrong_cross_attention, x_dec, x_dec, *Ws, H, None)),
                    (NO_SCALE, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, scale=1.0)),
                    (SCALE_C, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, scale=math.sqrt(C))),
                    (SOFTMAX_AXIS, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, softmax_dim=-2)),
                    (HEAD_SPLIT, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, split_by_view=True)),
                    (NO_WO, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, use_wo=False)),
                    (CAUSAL, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, causal=True))]
        if S == T:
            mistakes.insert(0, (SWAPPED, partial(_wrong_cross_attention, memory, x_dec, *Ws, H, None)))
        if mask is not None:
            mistakes += [(MASK_IGNORED, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, None)),
                         (MASK_INVERTED, partial(_wrong_cross_attention, x_dec, memory, *Ws, H, mask, invert_mask=True))]
        with explain_failure(lambda: probe_attention_core(
                lambda x_q, x_kv, m: fn(x_q, x_kv, eye, eye, eye, eye, 1, m), "your cross_attention")):
            _compare(out, expected, f"output for {what}", mistakes, shape_hint=SHAPE)
        if lengths is not None:  # gradients reach both the decoder states and the encoder output
            def learner(x, m):
                return fn(x, m, W_q, W_k, W_v, W_o, H, mask)

            def reference(x, m):
                return _reference_cross_attention(x, m, W_q, W_k, W_v, W_o, H, mask)

            for name, got, want in zip(("x_dec", "memory"), grad_of(learner, x_dec, memory),
                                       grad_of(reference, x_dec, memory)):
                if got is None:
                    raise CheckFailed(f"no gradient reaches {name}", _no_grad_hint(name))
                expect_close(got, want, f"gradient with respect to {name} for {what}")
    return len(cases)


# -------------------------------------------------------------- decoder block


def _reference_block(d_model: int, n_heads: int, d_ff: int, norm_first: bool) -> DecoderBlock:
    ref = DecoderBlock(d_model, n_heads, d_ff, dropout=0.0, norm_first=norm_first).eval()
    vary_norms(ref.self_attn_sublayer.norm, ref.cross_attn_sublayer.norm, ref.ffn_sublayer.norm)
    return ref


def _load_into(block: nn.Module, ref: DecoderBlock) -> None:
    copy_reference_weights(block, {"self_attn": ref.self_attn, "cross_attn": ref.cross_attn, "ffn": ref.ffn,
                                   "norm1": ref.self_attn_sublayer.norm, "norm2": ref.cross_attn_sublayer.norm,
                                   "norm3": ref.ffn_sublayer.norm},
                           "keep the given __init__ (self_attn, cross_attn, ffn, norm1, norm2, norm3).")


def _wrong_block(ref: DecoderBlock, x, memory, tgt_mask=None, memory_mask=None, *, norm_first: bool,
                 causal=True, use_tgt_mask=True, residual=("self", "cross", "ffn"), kv="memory",
                 cross_first=False, norm_memory=False, shared_norm=False, use_memory_mask=True):
    """The decoder block written out, with switches that reproduce the usual mistakes."""
    norms = {"self": ref.self_attn_sublayer.norm, "cross": ref.cross_attn_sublayer.norm, "ffn": ref.ffn_sublayer.norm}
    if shared_norm:
        norms = dict.fromkeys(norms, norms["self"])
    T = x.shape[1]
    self_mask = tgt_mask if use_tgt_mask else None
    if causal:
        c = causal_mask(T)
        self_mask = c if self_mask is None else self_mask & c

    def f_self(h):
        return ref.self_attn(h, mask=self_mask)[0]

    def f_cross(h):
        m = norms["cross"](memory) if norm_memory else memory
        keys = {"memory": m, "x": h, "swapped": h}[kv]
        queries = m if kv == "swapped" else h
        mask = memory_mask if use_memory_mask and kv == "memory" else None
        return ref.cross_attn(queries, keys, keys, mask=mask)[0]

    def sublayer(name, x, f):
        if norm_first:
            out = f(norms[name](x))
            return x + out if name in residual else out
        return norms[name](x + f(x) if name in residual else f(x))

    steps = [("cross", f_cross), ("self", f_self)] if cross_first else [("self", f_self), ("cross", f_cross)]
    for name, f in steps + [("ffn", ref.ffn)]:
        x = sublayer(name, x, f)
    return x


NO_CAUSAL = ("the self-attention is missing its causal mask: target position t must not see positions > t "
             "(combine it with tgt_mask: tgt_mask & causal).")
TGT_MASK_IGNORED = "pass tgt_mask (target padding) to the self-attention, combined with the causal mask."
NO_RESIDUAL = "a residual connection is missing: every sublayer adds its input back (x + sublayer(...))."
PRE_NOT_POST = ("norm in the wrong place: with norm_first=False (post-LN, the 2017 paper) normalise AFTER the "
                "residual add: x = norm(x + f(x)).")
POST_NOT_PRE = ("norm in the wrong place: with norm_first=True (pre-LN) normalise the sublayer's input and add "
                "the raw x back: x = x + f(norm(x)).")
BLOCK_SWAPPED = ("cross-attention takes its queries from the decoder stream and its keys/values from memory: "
                 "cross_attn(h, memory, memory).")
BLOCK_SELF = "the second sublayer is cross-attention: keys and values come from memory, not from the decoder."
ORDER = "the order is masked self-attention, then cross-attention, then the feed-forward network."
NORM_MEMORY = "normalise only the decoder stream; memory enters cross-attention as the encoder produced it."
SHARED_NORM = "each sublayer has its own LayerNorm: norm1 for self-attention, norm2 for cross-attention, norm3 for the FFN."
MEM_MASK_IGNORED = "pass memory_mask to the cross-attention so that padded source positions get weight 0."


@check("decoder_block")
def check_decoder_block(cls) -> int:
    if isinstance(cls, nn.Module) or not callable(cls):
        raise CheckFailed(f"expected the class itself, got {type(cls).__name__}",
                          "pass the class, e.g. check_decoder_block(MyDecoderBlock), not an instance.")
    C, H, FF = 16, 4, 32
    cases = [  # (what, B, T, S, target lengths, source lengths)
        ("B=2, T=S=5", 2, 5, 5, None, None),
        ("B=2, T=4, S=7 with source padding", 2, 4, 7, None, [7, 3]),
        ("a batch of one with T=1, S=3", 1, 1, 3, None, None),
        ("B=3, T=6, S=4 with target and source padding", 3, 6, 4, [6, 4, 2], [4, 4, 1]),
    ]
    n = 0
    for norm_first in (True, False):
        label = "pre-LN" if norm_first else "post-LN"
        ref = _reference_block(C, H, FF, norm_first)
        block = call(cls, C, H, FF, norm_first=norm_first)
        if not isinstance(block, nn.Module):
            raise CheckFailed(f"{cls.__name__}(...) did not build an nn.Module", "subclass nn.Module.")
        _load_into(block, ref)
        block.eval()
        for what, B, T, S, tgt_lengths, src_lengths in cases:
            what = f"{label}, {what}"
            x, memory = torch.randn(B, T, C), torch.randn(B, S, C)
            tgt_mask = None if tgt_lengths is None else _padding(tgt_lengths, T)
            memory_mask = None if src_lengths is None else _padding(src_lengths, S)
            expected = ref(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
            out = call(block, x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
            args = (ref, x, memory, tgt_mask, memory_mask)
            nf = dict(norm_first=norm_first)
            mistakes = [(NO_CAUSAL, partial(_wrong_block, *args, **nf, causal=False)),
                        (NO_CAUSAL, partial(_wrong_block, *args, **nf, causal=False, use_tgt_mask=False)),
                        (PRE_NOT_POST if not norm_first else POST_NOT_PRE, partial(_wrong_block, *args, norm_first=not norm_first)),
                        (BLOCK_SELF, partial(_wrong_block, *args, **nf, kv="x")),
                        (ORDER, partial(_wrong_block, *args, **nf, cross_first=True)),
                        (SHARED_NORM, partial(_wrong_block, *args, **nf, shared_norm=True))]
            mistakes += [(NO_RESIDUAL, partial(_wrong_block, *args, **nf, residual=keep))
                         for keep in ((), ("self", "cross"), ("self", "ffn"), ("cross", "ffn"))]
            if T == S:
                mistakes.insert(0, (BLOCK_SWAPPED, partial(_wrong_block, *args, **nf, kv="swapped")))
            if norm_first:
                mistakes.append((NORM_MEMORY, partial(_wrong_block, *args, **nf, norm_memory=True)))
            if tgt_mask is not None:
                mistakes.append((TGT_MASK_IGNORED, partial(_wrong_block, *args, **nf, use_tgt_mask=False)))
            if memory_mask is not None:
                mistakes.append((MEM_MASK_IGNORED, partial(_wrong_block, *args, **nf, use_memory_mask=False)))
            _compare(out, expected, f"output ({what})", mistakes, shape_hint=SHAPE)
            n += 1
        # gradients with respect to both inputs (the encoder learns through cross-attention)
        x, memory = torch.randn(2, 4, C), torch.randn(2, 6, C)

        def learner(x, m):
            return block(x, m)

        for name, got, want in zip(("x", "memory"), grad_of(learner, x, memory), grad_of(ref, x, memory)):
            if got is None:
                raise CheckFailed(f"{label}: no gradient reaches {name}", _no_grad_hint(name))
            expect_close(got, want, f"{label}: gradient with respect to {name}")
        n += 1
    return n
