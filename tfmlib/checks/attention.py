"""Checks for lesson 03, attention from Q, K, V.

    check_softmax(softmax)                          softmax over the last axis, numerically stable
    check_attention_scores(attention_scores)        q @ k^T / sqrt(d_k)
    check_causal_mask(causal_mask)                  (T, T) bool, True = may attend
    check_scaled_dot_product_attention(sdpa)        (context, attn_weights), with or without a mask

Each runs the learner's function against tfmlib's reference on random inputs and edge
cases (batch of one, T = 1, T_q != T_k, padding, extra head dimensions, large scores)
and compares gradients too. ``mistakes=`` maps a hint to what the usual wrong version
returns, so a learner who makes that mistake is told which one it is.

Shape legend: B batch, H heads, T_q queries, T_k keys, d_k query/key width, d_v value width.
"""
from __future__ import annotations

import functools
import math

import torch

from ..attention import scaled_dot_product_attention as reference_attention
from ..masks import causal_mask as reference_causal_mask
from ..masks import padding_mask
from .core import CheckFailed, call, check, expect_close, expect_shape, expect_tensor, grad_of
from .probes import explain_failure, probe_helpers

__all__ = ["check_softmax", "check_attention_scores", "check_causal_mask", "check_scaled_dot_product_attention",
           "attention_variant", "probe_attention_core", "INNER_MISTAKES"]

HINT_AXIS = "take the softmax over the last axis (dim=-1, the keys), so that each query's row sums to 1."
HINT_ROW_SUM = "divide by each row's own sum (.sum(dim=-1, keepdim=True)), not by the sum of the whole tensor."
HINT_KEEPDIM = ("use keepdim=True for the row max and the row sum, so that they broadcast along each row "
                "instead of down the columns.")
HINT_KEEPDIM_SUM = ("use keepdim=True for the row sum too: without it the sums of shape (T,) divide down the "
                    "columns instead of along each row.")
HINT_UNSTABLE = ("not numerically stable: exp() of a large score overflows to inf, and inf / inf = NaN. "
                 "Subtract each row's max (keepdim=True) before exp().")
HINT_GLOBAL_MAX = ("subtract each row's own max (x.max(dim=-1, keepdim=True).values), not the max of the whole "
                   "tensor: a row far below the global max underflows to 0 / 0 = NaN.")
HINT_NO_SCALE = "divide the scores by sqrt(d_k), where d_k = q.shape[-1] (the query/key width)."
HINT_SCALE_DK = "divide by sqrt(d_k), not by d_k itself."
HINT_SCALE_T = "d_k is the feature width q.shape[-1], not the number of tokens q.shape[-2]."
HINT_KQ = ("rows must index the queries: compute q @ k.transpose(-2, -1), not k @ q.transpose(-2, -1) "
           "(the transpose of the right answer).")
HINT_MASK_AFTER = ("apply the mask BEFORE the softmax (scores.masked_fill(~mask, float('-inf'))): zeroing weights "
                   "after it leaves rows that no longer sum to 1.")
HINT_MASK_INVERTED = ("True in a mask means 'may attend': fill the scores where the mask is False (~mask) "
                      "with -inf, not where it is True.")
HINT_MASK_ZERO = "a blocked score must become -inf before the softmax: a score of 0 still gets weight."
HINT_MASK_IGNORED = "the mask was ignored: fill the blocked scores with -inf before the softmax."
HINT_ORDER = "return the pair in the order (context, attn_weights)."
HINT_WEIGHTS_K = "the weighted sum is over the VALUES: context = attn_weights @ v, not attn_weights @ k."
HINT_EMPTY_ROW = ("a query whose keys are ALL masked has nothing to attend to: its softmax is 0 / 0 = NaN. Give "
                  "such rows weights of 0 (so their context is 0), as PyTorch does: after the softmax, "
                  "attn_weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0).")
HINT_PAIR = "return two tensors: (context, attn_weights)."
HINT_CAUSAL_INVERTED = ("True must mean 'may attend' (the course's and PyTorch's convention): you returned the "
                        "blocked positions. Query i may attend to keys 0..i.")
HINT_CAUSAL_NO_DIAG = "a token may attend to itself: keep the diagonal (torch.tril(..., diagonal=0))."
HINT_CAUSAL_ONE_AHEAD = "query i must not see key i + 1: use diagonal=0, not diagonal=1."
HINT_CAUSAL_UPPER = ("rows are queries and columns are keys: query i may see keys 0..i, the LOWER triangle "
                     "(torch.tril), not the upper one.")
HINT_CAUSAL_DTYPE = "return a boolean mask (dtype=torch.bool), True = may attend."
HINT_CAUSAL_ADDITIVE = ("this course keeps masks boolean (True = may attend); the -inf is added only inside the "
                        "softmax step.")


# ---------------------------------------------------------------- reference and typical mistakes
def _softmax_variant(x: torch.Tensor, mistake: str) -> torch.Tensor:
    """What a typical wrong softmax returns."""
    if mistake == "axis0":
        return torch.softmax(x, dim=0)
    if mistake == "axis-2":
        return torch.softmax(x, dim=-2)
    if mistake == "global_sum":
        e = torch.exp(x - x.max())
        return e / e.sum()
    if mistake == "no_keepdim_max":  # only broadcasts silently for square inputs
        e = torch.exp(x - x.max(dim=-1).values)  # (T,) broadcasts as a row
        return e / e.sum(dim=-1, keepdim=True)
    if mistake == "no_keepdim":
        e = torch.exp(x - x.max(dim=-1).values)
        return e / e.sum(dim=-1)
    raise ValueError(mistake)


def _attention_variant(q, k, v, mask=None, scale="sqrt", axis=-1, kq=False, mask_mode="fill"):
    """A (context, weights) pair computed the way a typical wrong implementation does it."""
    d_k, T = q.shape[-1], q.shape[-2]
    divisor = {"sqrt": math.sqrt(d_k), "none": 1.0, "d_k": float(d_k), "T": math.sqrt(T)}[scale]
    attn_scores = (k @ q.transpose(-2, -1) if kq else q @ k.transpose(-2, -1)) / divisor  # (..., T_q, T_k)
    if mask is not None and mask_mode == "fill":
        attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    elif mask is not None and mask_mode == "inverted":
        attn_scores = attn_scores.masked_fill(mask, float("-inf"))
    elif mask is not None and mask_mode == "zero":
        attn_scores = attn_scores.masked_fill(~mask, 0.0)
    attn_weights = torch.softmax(attn_scores, dim=axis)
    if mask is not None and mask_mode == "after":
        attn_weights = attn_weights.masked_fill(~mask, 0.0)
    return attn_weights @ v, attn_weights


attention_variant = _attention_variant  # public: the composite checks (lessons 04, 08) reuse it

# lesson 03's mistakes, as switches of attention_variant; composite checks look for them inside
INNER_MISTAKES = {HINT_NO_SCALE: dict(scale="none"), HINT_SCALE_DK: dict(scale="d_k"), HINT_SCALE_T: dict(scale="T"),
                  HINT_AXIS: dict(axis=-2), HINT_KQ: dict(kq=True), HINT_MASK_AFTER: dict(mask_mode="after"),
                  HINT_MASK_ZERO: dict(mask_mode="zero"), HINT_MASK_INVERTED: dict(mask_mode="inverted"),
                  HINT_MASK_IGNORED: dict(mask_mode="ignore")}


def probe_attention_core(run, what: str) -> None:
    """Find a lesson-03 mistake inside a composite function (multi-head, cross-attention).

    ``run(x_q, x_kv, mask)`` calls the learner's function with ONE head and IDENTITY weight
    matrices, so that its output is softmax(Q K^T / sqrt(d_k)) V itself, with Q = x_q, K = V = x_kv.
    Raises CheckFailed naming the mistake when that output is what a typical wrong attention
    returns; returns quietly when the attention is right or the mistake is elsewhere.
    """
    gen = torch.Generator().manual_seed(3)
    x_q, x_kv = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)  # T = 5 != d_k = 8
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))                 # (B, 1, 1, T_k)
    out = call(run, x_q.clone(), x_kv.clone(), mask)
    if not isinstance(out, torch.Tensor) or out.shape != x_q.shape:
        return
    q, kv = x_q[:, None], x_kv[:, None]                                  # one head: (B, 1, T, d_k)
    right = reference_attention(q, kv, kv, mask=mask)[0][:, 0]           # (B, 1, T, d_k) -> (B, T, d_k)
    if torch.allclose(out.detach().float(), right, atol=1e-5, rtol=1e-4):
        return
    for hint, switches in INNER_MISTAKES.items():
        wrong = _attention_variant(q, kv, kv, mask, **switches)[0][:, 0]
        if torch.allclose(out.detach().float(), wrong, atol=1e-5, rtol=1e-4, equal_nan=True):
            raise CheckFailed(f"The attention inside {what} has a mistake (found by running it with one head and "
                              "identity weights, where its output is softmax(Q K^T / sqrt(d_k)) V itself)",
                              f"{hint} (the same step as lesson 03's scaled_dot_product_attention exercise)")


def _expect_grads(fn, inputs, names, reference_fn, what):
    """The learner's gradients w.r.t. ``inputs`` equal the reference's."""
    mine = grad_of(fn, *inputs)
    ref = grad_of(reference_fn, *inputs)
    for g_mine, g_ref, name in zip(mine, ref, names):
        if g_mine is None:
            raise CheckFailed(f"{what}: no gradient reaches {name}",
                              "avoid .detach(), .item(), .numpy() or building new tensors from the inputs' values.")
        expect_close(g_mine, g_ref, f"{what}: gradient w.r.t. {name}")


# ---------------------------------------------------------------- softmax
@check("softmax")
def check_softmax(fn):
    """fn(scores) -> weights: softmax over the last axis, stable for large scores."""
    cases = 0
    x = torch.randn(4, 4) * 3
    expect_close(call(fn, x.clone()), torch.softmax(x, -1), "output on a square (4, 4) score matrix", mistakes={
        HINT_AXIS: _softmax_variant(x, "axis0"), HINT_ROW_SUM: _softmax_variant(x, "global_sum"),
        HINT_KEEPDIM: _softmax_variant(x, "no_keepdim_max"), HINT_KEEPDIM_SUM: _softmax_variant(x, "no_keepdim")})
    cases += 1
    x = torch.randn(2, 3, 5) * 3
    expect_close(call(fn, x.clone()), torch.softmax(x, -1), "output on a (2, 3, 5) batch", mistakes={
        HINT_AXIS: _softmax_variant(x, "axis-2"), HINT_ROW_SUM: _softmax_variant(x, "global_sum")})
    cases += 1
    x = torch.randn(1, 1)
    expect_close(call(fn, x.clone()), torch.ones(1, 1), "output for a single score (T = 1)")
    cases += 1
    x = torch.randn(2, 2, 3, 5)
    expect_close(call(fn, x.clone()), torch.softmax(x, -1), "output with extra head dimensions (2, 2, 3, 5)",
                 mistakes={HINT_AXIS: _softmax_variant(x, "axis-2"), HINT_ROW_SUM: _softmax_variant(x, "global_sum")})
    cases += 1
    x = torch.randn(3, 5)
    x[0, 1] = x[1, 0] = x[1, 4] = x[2, 2] = float("-inf")  # masked scores: weight exactly 0
    expect_close(call(fn, x.clone()), torch.softmax(x, -1), "output on scores containing -inf (masked keys)",
                 hint="-inf scores must get weight 0 while the other scores of the row still sum to 1.")
    cases += 1
    x = 1000.0 + torch.randn(2, 4, 6) * 5
    expect_close(call(fn, x.clone()), torch.softmax(x, -1), "output on large scores (about 1000)",
                 hint=HINT_UNSTABLE)
    cases += 1
    x = torch.randn(2, 6) * 3
    x[0] += 1000.0  # one row far above the other
    expect_close(call(fn, x.clone()), torch.softmax(x, -1), "output on rows at very different scales "
                 "(one near 1000, one near 0)", hint=HINT_GLOBAL_MAX)
    cases += 1
    _expect_grads(fn, [torch.randn(2, 3, 5)], ["the scores"], functools.partial(torch.softmax, dim=-1),
                  "(2, 3, 5) batch")
    return cases + 1


# ---------------------------------------------------------------- attention scores
def _reference_scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, d_k) @ (..., d_k, T_k) -> (..., T_q, T_k)


def _score_mistakes(q, k):
    return {HINT_NO_SCALE: q @ k.transpose(-2, -1), HINT_SCALE_DK: q @ k.transpose(-2, -1) / q.shape[-1],
            HINT_SCALE_T: q @ k.transpose(-2, -1) / math.sqrt(q.shape[-2]),
            HINT_KQ: k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])}


@check("attention_scores")
def check_attention_scores(fn):
    """fn(q, k) -> scaled scores (..., T_q, T_k)."""
    cases = 0
    for shape_q, shape_k, what in [((2, 5, 8), (2, 5, 8), "self-attention on a (2, 5, 8) batch"),
                                   ((2, 3, 4, 8), (2, 3, 6, 8), "cross-attention with T_q=4 != T_k=6 and 3 heads"),
                                   ((1, 1, 16), (1, 1, 16), "a batch of one with T = 1")]:
        q, k = torch.randn(shape_q), torch.randn(shape_k)
        expected = _reference_scores(q, k)
        out = expect_tensor(call(fn, q.clone(), k.clone()), f"scores for {what}")
        if out.shape != expected.shape and out.shape == expected.transpose(-2, -1).shape:
            raise CheckFailed(f"scores for {what}: expected shape {tuple(expected.shape)} (…, T_q, T_k), "
                              f"got {tuple(out.shape)}", HINT_KQ)
        expect_close(out, expected, f"scores for {what}", mistakes=_score_mistakes(q, k))
        cases += 1
    _expect_grads(fn, [torch.randn(2, 4, 8), torch.randn(2, 6, 8)], ["q", "k"], _reference_scores,
                  "cross-attention (2, 4, 8) x (2, 6, 8)")
    return cases + 1


# ---------------------------------------------------------------- causal mask
def _expect_mask(out, expected: torch.Tensor, what: str, mistakes: dict) -> None:
    out = expect_shape(out, expected.shape, what, hint="a causal mask for T tokens has shape (T, T): "
                       "rows are queries, columns are keys.")
    if out.dtype != torch.bool:
        has_neg_inf = out.is_floating_point() and torch.isinf(out).any().item()
        raise CheckFailed(f"{what}: expected dtype torch.bool, got {out.dtype}",
                          HINT_CAUSAL_ADDITIVE if has_neg_inf else HINT_CAUSAL_DTYPE)
    if torch.equal(out.cpu(), expected):
        return
    for hint, wrong in mistakes.items():
        if torch.equal(out.cpu(), wrong):
            raise CheckFailed(f"{what}: wrong positions are allowed", hint)
    wrong = (out.cpu() != expected).nonzero().tolist()
    raise CheckFailed(f"{what}: {len(wrong)} entries differ, first at (query, key) = {tuple(wrong[0])}",
                      "entry (i, j) is True exactly when key j is not in query i's future (j <= i).")


@check("causal_mask")
def check_causal_mask(fn):
    """fn(T) -> (T, T) bool mask, True where key j <= query i."""
    for T in (4, 1, 7):
        ones = torch.ones(T, T, dtype=torch.bool)
        expected = reference_causal_mask(T)
        _expect_mask(call(fn, T), expected, f"causal_mask({T})", mistakes={
            HINT_CAUSAL_INVERTED: ~expected, HINT_CAUSAL_NO_DIAG: torch.tril(ones, diagonal=-1),
            HINT_CAUSAL_ONE_AHEAD: torch.tril(ones, diagonal=1), HINT_CAUSAL_UPPER: torch.triu(ones)})
    return 3


# ---------------------------------------------------------------- scaled dot-product attention
def _attention_pair(out, q, v, T_k: int, what: str):
    """Unpack the learner's (context, attn_weights), with a hint for the usual packing mistakes."""
    context_shape = (*q.shape[:-1], v.shape[-1])
    weights_shape = (*q.shape[:-1], T_k)
    if isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what}: expected a pair (context, attn_weights), got one tensor of shape "
                          f"{tuple(out.shape)}", HINT_PAIR)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{what}: expected a pair (context, attn_weights), got {type(out).__name__}", HINT_PAIR)
    context, attn_weights = (expect_tensor(t, f"{what}: {name}") for t, name in zip(out, ("context", "attn_weights")))
    if tuple(context.shape) == weights_shape and tuple(attn_weights.shape) == context_shape \
            and context_shape != weights_shape:
        raise CheckFailed(f"{what}: the first tensor has the weights' shape {weights_shape}", HINT_ORDER)
    if tuple(context.shape) != context_shape and tuple(context.shape) == (*q.shape[:-1], q.shape[-1]):
        raise CheckFailed(f"{what}: context has shape {tuple(context.shape)} (…, T_q, d_k), expected "
                          f"{context_shape} (…, T_q, d_v)", HINT_WEIGHTS_K)
    return context, attn_weights


def _attention_case(fn, q, k, v, mask, what, mask_mistakes=False):
    expected_context, expected_weights = reference_attention(q, k, v, mask=mask)
    out = call(fn, q.clone(), k.clone(), v.clone(), mask=mask)
    context, attn_weights = _attention_pair(out, q, v, k.shape[-2], what)
    variants = {HINT_NO_SCALE: dict(scale="none"), HINT_SCALE_DK: dict(scale="d_k"), HINT_AXIS: dict(axis=-2)}
    if q.shape[-2] == k.shape[-2]:
        variants[HINT_KQ] = dict(kq=True)
        variants[HINT_SCALE_T] = dict(scale="T")
    if mask_mistakes:
        variants.update({HINT_MASK_AFTER: dict(mask_mode="after"), HINT_MASK_INVERTED: dict(mask_mode="inverted"),
                         HINT_MASK_ZERO: dict(mask_mode="zero"), HINT_MASK_IGNORED: dict(mask_mode="ignore")})
    wrong = {hint: _attention_variant(q, k, v, mask, **kw) for hint, kw in variants.items()}
    if attn_weights.shape != expected_weights.shape \
            and attn_weights.shape == expected_weights.transpose(-2, -1).shape:
        raise CheckFailed(f"{what}: attn_weights have shape {tuple(attn_weights.shape)}, expected "
                          f"{tuple(expected_weights.shape)} (…, T_q, T_k)", HINT_KQ)
    if context.shape == expected_weights.shape and attn_weights.shape == expected_context.shape \
            and torch.allclose(context.detach().float(), expected_weights, atol=1e-5, rtol=1e-4) \
            and torch.allclose(attn_weights.detach().float(), expected_context, atol=1e-5, rtol=1e-4):
        raise CheckFailed(f"{what}: the two tensors are right but swapped", HINT_ORDER)
    empty_rows = mask is not None and not bool(mask.any(dim=-1).all())
    blew_up = not bool(torch.isfinite(attn_weights.detach()).all())   # NaN/inf: the stability hint fits
    expect_close(attn_weights, expected_weights, f"{what}: attn_weights",
                 mistakes={hint: w for hint, (_, w) in wrong.items()},
                 hint=HINT_EMPTY_ROW if empty_rows else HINT_UNSTABLE if blew_up else None,
                 empty_row_hint=HINT_EMPTY_ROW)
    expect_close(context, expected_context, f"{what}: context",
                 mistakes={**{hint: c for hint, (c, _) in wrong.items()}, HINT_WEIGHTS_K: expected_weights @ k},
                 hint="the weights are right: context = attn_weights @ v.")


@check("scaled_dot_product_attention")
def check_scaled_dot_product_attention(fn):
    """fn(q, k, v, mask=None) -> (context, attn_weights), mask boolean with True = may attend."""
    cases = [
        ((2, 5, 8), (2, 5, 8), (2, 5, 6), None, "self-attention on a (2, 5, 8) batch"),
        ((2, 3, 4, 8), (2, 3, 7, 8), (2, 3, 7, 5), None, "cross-attention with T_q=4 != T_k=7 and 3 heads"),
        ((1, 1, 8), (1, 1, 8), (1, 1, 8), None, "a batch of one with T = 1"),
        ((2, 2, 6, 8), (2, 2, 6, 8), (2, 2, 6, 4), reference_causal_mask(6), "a causal mask (6, 6) with 2 heads"),
        ((2, 2, 6, 8), (2, 2, 6, 8), (2, 2, 6, 4), padding_mask(torch.tensor([[5, 3, 2, 7, 0, 0], [4, 1, 1, 9, 2, 0]])),
         "a padding mask (2, 1, 1, 6)"),
        ((2, 3, 4, 8), (2, 3, 7, 8), (2, 3, 7, 5), padding_mask(torch.tensor([[5, 3, 2, 7, 1, 0, 0], [4, 1, 0, 0, 0, 0, 0]])),
         "cross-attention (T_q=4, T_k=7) with a padding mask on the keys"),
    ]
    helpers = explain_failure(lambda: probe_helpers(fn, {"softmax": check_softmax,
                                                         "attention_scores": check_attention_scores,
                                                         "causal_mask": check_causal_mask}))
    with helpers:
        _sdpa_cases(fn, cases)
    return len(cases) + 3


def _sdpa_cases(fn, cases) -> None:
    for shape_q, shape_k, shape_v, mask, what in cases:
        q, k, v = torch.randn(shape_q), torch.randn(shape_k), torch.randn(shape_v)
        _attention_case(fn, q, k, v, mask, what, mask_mistakes=mask is not None)
    q, k, v = torch.randn(2, 5, 8) * 30, torch.randn(2, 5, 8) * 30, torch.randn(2, 5, 4)
    _attention_case(fn, q, k, v, None, "large scores (q and k of size about 30)")
    empty = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])  # query 1: no key
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 4)
    _attention_case(fn, q, k, v, empty, "a query with nothing to attend to (mask row 1 all False)")
    mask = reference_causal_mask(6)
    inputs = [torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 4)]
    _expect_grads(functools.partial(fn, mask=mask), inputs, ["q", "k", "v"],
                  functools.partial(reference_attention, mask=mask), "causal self-attention (2, 2, 6, 8)")
