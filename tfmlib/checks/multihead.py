"""Checks for lesson 04's exercises: split_heads, merge_heads, repeat_kv and a
multi-head attention forward. Each runs the learner's code against tfmlib's
reference (``tfmlib.multihead``) on random inputs and edge cases, and names the
usual mistake when the output matches it.

Shape legend: B batch, T_q/T_k query/key length, C d_model, H query heads,
H_kv key/value heads, hs head size (C // H).

The exercise's weight convention is ``x @ W`` (W has shape (in, out)), with no biases:
    multi_head_attention(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None)
    W_q (C, C), W_k and W_v (C, H_kv * hs), W_o (C, C); mask bool, True = may attend.
"""
from __future__ import annotations

import math

import torch

from ..attention import scaled_dot_product_attention
from ..masks import causal_mask
from ..multihead import merge_heads, repeat_kv, split_heads
from .attention import probe_attention_core
from .core import CheckFailed, call, check, expect_close, expect_tensor, grad_of, hint_for_shape
from .probes import explain_failure, probe_helpers

__all__ = ["check_split_heads", "check_merge_heads", "check_repeat_kv", "check_multi_head_attention",
           "HINT_SPLIT_TOKENS", "HINT_SPLIT_STRIDED", "HINT_SPLIT_NO_TRANSPOSE", "HINT_MERGE_NO_TRANSPOSE",
           "HINT_MERGE_STRIDED", "HINT_MERGE_SUM", "HINT_REPEAT_TILE", "HINT_REPEAT_TOKENS",
           "HINT_NO_W_O", "HINT_SCALE_D_MODEL", "HINT_NO_SCALE", "HINT_MASK_IGNORED", "HINT_MASK_INVERTED",
           "HINT_SOFTMAX_AXIS"]

HINT_SPLIT_TOKENS = ("heads split the features, not the tokens: view as (B, T, H, hs), then transpose(1, 2). "
                     "A plain view(B, H, T, hs) cuts the sequence into blocks of tokens.")
HINT_SPLIT_STRIDED = ("each head takes a contiguous slice of hs features (head 0 = features 0..hs-1): "
                      "view as (B, T, H, hs), not (B, T, hs, H).")
HINT_SPLIT_NO_TRANSPOSE = "you returned (B, T, H, hs): transpose(1, 2) to put the heads before the tokens."
HINT_MERGE_NO_TRANSPOSE = ("heads merged without transposing back: transpose(1, 2) to (B, T, H, hs) before "
                           "reshaping to (B, T, C); reshaping (B, H, T, hs) directly mixes tokens and heads.")
HINT_MERGE_STRIDED = ("concatenate the heads one after the other (features 0..hs-1 come from head 0): "
                      "go through (B, T, H, hs), not (B, T, hs, H).")
HINT_MERGE_SUM = "concatenate the heads (width H * hs = C); do not sum or average them."
HINT_REPEAT_TILE = ("repeat() tiles the heads as kv0, kv1, kv0, kv1, …; query head h must read key/value head "
                    "h // n_rep (kv0, kv0, kv1, kv1, …): use repeat_interleave(n_rep, dim=1).")
HINT_REPEAT_TOKENS = "repeat along the heads axis (dim 1), not along the tokens or the features."
HINT_NO_W_O = "the concatenated heads still go through W_O: return merge_heads(context) @ W_o."
HINT_SCALE_D_MODEL = ("each head's scores are scaled by 1/sqrt(head_size) (the width of its own q and k), "
                      "not by 1/sqrt(d_model).")
HINT_NO_SCALE = "scale the scores by 1/sqrt(head_size) before the softmax."
HINT_MASK_IGNORED = "the mask was ignored: set the scores to -inf where mask is False, before the softmax."
HINT_MASK_INVERTED = "the mask is inverted: True means 'may attend', so fill -inf where the mask is False (~mask)."
HINT_SOFTMAX_AXIS = "take the softmax over the keys (the last axis), so that each query's weights sum to 1."


def _expect_shape(x, shape, what: str, shape_hints: dict, expected: torch.Tensor | None = None) -> torch.Tensor:
    """Like core.expect_shape, with a hint chosen by the wrong shape the learner returned."""
    x = expect_tensor(x, what)
    if tuple(x.shape) != tuple(shape):
        hint = shape_hints.get(tuple(x.shape))
        if hint is None and expected is not None:
            hint = hint_for_shape(x, expected)
        if hint is None and x.numel() == math.prod(shape):
            hint = "the right number of elements in the wrong shape: check your view/reshape/transpose."
        raise CheckFailed(f"{what}: expected shape {tuple(shape)}, got {tuple(x.shape)}", hint)
    return x


# ---------------------------------------------------------------- split / merge

@check("split_heads")
def check_split_heads(fn):
    """fn(x (B, T, C), n_heads) -> (B, H, T, hs)."""
    cases = [((2, 5, 12), 3, "a (2, 5, 12) batch, 3 heads"),
             ((1, 4, 8), 4, "a batch of one, T = H = 4"),
             ((2, 1, 6), 3, "T = 1"),
             ((2, 3, 4), 1, "a single head")]
    for shape, H, what in cases:
        B, T, C = shape
        hs = C // H
        x = torch.randn(shape)
        out = call(fn, x.clone(), H)
        _expect_shape(out, (B, H, T, hs), f"split_heads on {what}",
                      {(B, T, H, hs): HINT_SPLIT_NO_TRANSPOSE, (B, T, hs, H): HINT_SPLIT_STRIDED})
        expect_close(out, split_heads(x, H), f"split_heads on {what}", mistakes={
            HINT_SPLIT_TOKENS: x.reshape(B, H, T, hs),
            HINT_SPLIT_STRIDED: x.reshape(B, T, hs, H).permute(0, 3, 1, 2),
            HINT_SPLIT_NO_TRANSPOSE: x.reshape(B, T, H, hs)})
    return len(cases)


@check("merge_heads")
def check_merge_heads(fn):
    """fn(x (B, H, T, hs)) -> (B, T, C), the inverse of split_heads."""
    cases = [((2, 3, 5, 4), "a (2, 3, 5, 4) batch"),
             ((1, 4, 4, 2), "a batch of one, T = H = 4"),
             ((2, 2, 1, 3), "T = 1"),
             ((2, 1, 3, 4), "a single head")]
    for shape, what in cases:
        B, H, T, hs = shape
        x = torch.randn(shape)
        out = call(fn, x.clone())
        _expect_shape(out, (B, T, H * hs), f"merge_heads on {what}",
                      {(B, T, hs): HINT_MERGE_SUM, (B, H, hs): HINT_MERGE_SUM, (B, T, H, hs): "reshape (B, T, H, hs) to (B, T, C) at the end."})
        expect_close(out, merge_heads(x), f"merge_heads on {what}", mistakes={
            HINT_MERGE_NO_TRANSPOSE: x.reshape(B, T, H * hs),
            HINT_MERGE_STRIDED: x.permute(0, 2, 3, 1).reshape(B, T, H * hs)})
    # the round trip: merge_heads undoes tfmlib's split_heads
    x = torch.randn(2, 6, 12)
    expect_close(call(fn, split_heads(x, 4)), x, "merge_heads(split_heads(x, 4)) (should give x back)",
                 mistakes={HINT_MERGE_NO_TRANSPOSE: split_heads(x, 4).reshape(2, 6, 12)})
    return len(cases) + 1


@check("repeat_kv")
def check_repeat_kv(fn):
    """fn(x (B, H_kv, T, hs), n_rep) -> (B, H_kv * n_rep, T, hs): head h reads kv head h // n_rep."""
    cases = [((2, 2, 5, 4), 3, "2 key/value heads repeated 3 times (GQA)"),
             ((1, 4, 3, 2), 2, "a batch of one, 4 key/value heads repeated twice"),
             ((2, 1, 3, 4), 4, "one key/value head shared by 4 query heads (MQA)"),
             ((2, 3, 1, 2), 2, "T = 1"),
             ((1, 2, 3, 2), 1, "n_rep = 1 (plain multi-head attention)")]
    for shape, n_rep, what in cases:
        B, H_kv, T, hs = shape
        x = torch.randn(shape)
        out = call(fn, x.clone(), n_rep)
        _expect_shape(out, (B, H_kv * n_rep, T, hs), f"repeat_kv on {what}",
                      {(B, H_kv, T * n_rep, hs): HINT_REPEAT_TOKENS, (B, H_kv, T, hs * n_rep): HINT_REPEAT_TOKENS,
                       (B * n_rep, H_kv, T, hs): HINT_REPEAT_TOKENS,
                       (B, H_kv, T, hs): "the output still has H_kv heads: repeat each key/value head n_rep times."})
        expect_close(out, repeat_kv(x, n_rep), f"repeat_kv on {what}",
                     mistakes={HINT_REPEAT_TILE: x.repeat(1, n_rep, 1, 1)})
    return len(cases)


# ---------------------------------------------------------------- the multi-head forward

def _mha_variant(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None, *, split="features", merge="transpose",
                 use_w_o=True, scale="head", kv="interleave", mask_mode="keep", softmax_dim=-1):
    """The exercise's forward, with switches that reproduce the usual mistakes (defaults = correct)."""
    B, T_q, C = x_q.shape
    hs = C // n_heads
    H_kv = W_k.shape[1] // hs

    def heads(t, n):  # (B, T, n * hs) -> (B, n, T, hs)
        if split == "tokens":
            return t.reshape(B, n, t.shape[1], hs)
        if split == "strided":  # head h gets features h, h + n, h + 2n, ...
            return t.reshape(B, t.shape[1], hs, n).permute(0, 3, 1, 2)
        return t.reshape(B, t.shape[1], n, hs).transpose(1, 2)

    q, k, v = heads(x_q @ W_q, n_heads), heads(x_kv @ W_k, H_kv), heads(x_kv @ W_v, H_kv)
    n_rep = n_heads // H_kv
    if kv == "interleave":
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    else:
        k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
    factor = {"head": 1 / math.sqrt(hs), "model": 1 / math.sqrt(C), "none": 1.0}[scale]
    attn_scores = q @ k.transpose(-2, -1) * factor  # (B, H, T_q, T_k)
    if mask is not None and mask_mode != "ignore":
        mask = ~mask if mask_mode == "invert" else mask
        attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    attn_weights = torch.softmax(attn_scores, dim=softmax_dim)
    context = attn_weights @ v  # (B, H, T_q, hs)
    if merge == "transpose":
        context = context.transpose(1, 2).reshape(B, T_q, C)
    else:
        context = context.reshape(B, T_q, C)
    return context @ W_o if use_w_o else context


def reference_multi_head_attention(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None):
    """The exercise's function built from tfmlib's pieces (differentiable in every input).
    tests/test_checks_multihead.py asserts it equals tfmlib's MultiHeadAttention."""
    hs = x_q.shape[-1] // n_heads
    n_kv_heads = W_k.shape[1] // hs
    q = split_heads(x_q @ W_q, n_heads)       # (B, T_q, C) -> (B, H, T_q, hs)
    k = split_heads(x_kv @ W_k, n_kv_heads)   # (B, T_k, H_kv * hs) -> (B, H_kv, T_k, hs)
    v = split_heads(x_kv @ W_v, n_kv_heads)
    n_rep = n_heads // n_kv_heads
    context, _ = scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask=mask)
    return merge_heads(context) @ W_o         # (B, H, T_q, hs) -> (B, T_q, C) -> (B, T_q, C)


def _weights(C, n_heads, n_kv_heads):
    hs = C // n_heads
    s = 1 / math.sqrt(C)
    return (torch.randn(C, C) * s, torch.randn(C, n_kv_heads * hs) * s,
            torch.randn(C, n_kv_heads * hs) * s, torch.randn(C, C) * s)


def _mistakes(args, mask, gqa: bool) -> dict:
    variants = {HINT_SPLIT_TOKENS: dict(split="tokens"),
                HINT_SPLIT_STRIDED: dict(split="strided"),
                HINT_MERGE_NO_TRANSPOSE: dict(merge="plain"),
                HINT_NO_W_O: dict(use_w_o=False),
                HINT_SCALE_D_MODEL: dict(scale="model"),
                HINT_NO_SCALE: dict(scale="none"),
                HINT_SOFTMAX_AXIS: dict(softmax_dim=-2)}
    if gqa:
        variants[HINT_REPEAT_TILE] = dict(kv="tile")
    if mask is not None:
        variants[HINT_MASK_IGNORED] = dict(mask_mode="ignore")
        variants[HINT_MASK_INVERTED] = dict(mask_mode="invert")
    return {hint: _mha_variant(*args, mask=mask, **flags) for hint, flags in variants.items()}


def _probe(fn) -> None:
    """First the learner's own helpers (exercises 1-3), then one head and identity weights: the
    learner's forward is then plain attention (lesson 03)."""
    probe_helpers(fn, {"split_heads": check_split_heads, "merge_heads": check_merge_heads,
                       "repeat_kv": check_repeat_kv})
    eye = torch.eye(8)
    probe_attention_core(lambda x_q, x_kv, mask: fn(x_q, x_kv, eye, eye, eye, eye, 1, mask=mask),
                         "your multi_head_attention")


@check("multi_head_attention")
def check_multi_head_attention(fn):
    """fn(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None) -> (B, T_q, C)."""
    pad = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]  # (B, 1, 1, T_k): 3 padded keys
    # (B, T_q, T_k, C, H, H_kv, mask, description)
    cases = [(2, 5, 5, 12, 3, 3, None, "self-attention, (2, 5, 12), 3 heads"),
             (1, 6, 6, 8, 2, 2, causal_mask(6), "a batch of one with a causal mask"),
             (2, 1, 1, 8, 4, 4, None, "T = 1"),
             (2, 3, 7, 12, 2, 2, pad, "cross-attention, T_q = 3, T_k = 7, padded keys"),
             (2, 6, 6, 16, 4, 2, causal_mask(6), "grouped-query heads (4 query heads, 2 key/value heads)"),
             (1, 4, 4, 8, 4, 1, None, "multi-query heads (4 query heads, 1 key/value head)")]
    for B, T_q, T_k, C, H, H_kv, mask, what in cases:
        x_q = torch.randn(B, T_q, C)
        x_kv = x_q if T_q == T_k else torch.randn(B, T_k, C)
        args = (x_q, x_kv, *_weights(C, H, H_kv), H)
        with explain_failure(lambda: _probe(fn)):
            out = call(fn, *(a.clone() if torch.is_tensor(a) else a for a in args), mask=mask)
        expected = reference_multi_head_attention(*args, mask=mask)
        _expect_shape(out, expected.shape, f"output on {what}", {}, expected)
        with explain_failure(lambda: _probe(fn)):
            expect_close(out, expected, f"output on {what}", mistakes=_mistakes(args, mask, gqa=H_kv < H))
    # gradients reach the inputs and every weight matrix
    x = torch.randn(2, 4, 8)
    weights = _weights(8, 2, 2)
    mask = causal_mask(4)
    learner = grad_of(lambda *t: fn(t[0], t[0], *t[1:], 2, mask=mask), x, *weights)
    reference = grad_of(lambda *t: reference_multi_head_attention(t[0], t[0], *t[1:], 2, mask=mask), x, *weights)
    for g, g_ref, name in zip(learner, reference, ("x", "W_q", "W_k", "W_v", "W_o")):
        if g is None:
            raise CheckFailed(f"no gradient reaches {name}", "use every weight matrix, and avoid .detach() or torch.no_grad().")
        expect_close(g, g_ref, f"gradient with respect to {name}", atol=1e-4)
    return len(cases) + 1
