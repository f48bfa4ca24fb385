"""The lesson-03 checks accept the reference, reject realistic wrong implementations with the
right hint, and report a stub as "not implemented"."""
import functools
import math

import pytest
import torch

from helpers import stub
from tfmlib.attention import scaled_dot_product_attention as tfm_attention
from tfmlib.checks import attention as checks
from tfmlib.masks import causal_mask as tfm_causal_mask


# ---------------------------------------------------------------- softmax
def softmax_ok(scores):
    shifted = scores - scores.max(dim=-1, keepdim=True).values
    e = torch.exp(shifted)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_naive(scores):  # overflows on large scores
    e = torch.exp(scores)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_dim0(scores):
    e = torch.exp(scores - scores.max(dim=0, keepdim=True).values)
    return e / e.sum(dim=0, keepdim=True)


def softmax_dim_minus2(scores):
    return torch.softmax(scores, dim=-2)


def softmax_global_sum(scores):
    e = torch.exp(scores - scores.max())
    return e / e.sum()


def softmax_global_max(scores):  # stable for one row, NaN when rows sit at different scales
    e = torch.exp(scores - scores.max())
    return e / e.sum(dim=-1, keepdim=True)


def softmax_no_keepdim(scores):
    e = torch.exp(scores - scores.max(dim=-1).values)
    return e / e.sum(dim=-1)


def softmax_no_keepdim_max(scores):
    e = torch.exp(scores - scores.max(dim=-1).values)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_detached(scores):
    return torch.softmax(scores.detach(), dim=-1)


SOFTMAX_WRONG = [
    (softmax_naive, checks.HINT_UNSTABLE),
    (softmax_dim0, checks.HINT_AXIS),
    (softmax_dim_minus2, checks.HINT_AXIS),
    (softmax_global_sum, checks.HINT_ROW_SUM),
    (softmax_global_max, checks.HINT_GLOBAL_MAX),
    (softmax_no_keepdim, checks.HINT_KEEPDIM_SUM),
    (softmax_no_keepdim_max, checks.HINT_KEEPDIM),
    (softmax_detached, "avoid .detach()"),
]


# ---------------------------------------------------------------- attention scores
def scores_ok(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def scores_unscaled(q, k):
    return q @ k.transpose(-2, -1)


def scores_by_dk(q, k):
    return q @ k.transpose(-2, -1) / q.shape[-1]


def scores_by_tokens(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-2])


def scores_kq(q, k):
    return k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])


def scores_via_item(q, k):
    return torch.tensor((q @ k.transpose(-2, -1)).tolist()) / math.sqrt(q.shape[-1])


SCORES_WRONG = [
    (scores_unscaled, checks.HINT_NO_SCALE),
    (scores_by_dk, checks.HINT_SCALE_DK),
    (scores_by_tokens, checks.HINT_SCALE_T),
    (scores_kq, checks.HINT_KQ),
    (scores_via_item, "gradients"),
]


# ---------------------------------------------------------------- causal mask
def causal_ok(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def causal_inverted(T):  # True = blocked
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def causal_no_diagonal(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)


def causal_one_ahead(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def causal_upper(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool))


def causal_float(T):
    return torch.tril(torch.ones(T, T))


def causal_additive(T):
    return torch.zeros(T, T).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))


def causal_flat(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool)).flatten()


CAUSAL_WRONG = [
    (causal_inverted, checks.HINT_CAUSAL_INVERTED),
    (causal_no_diagonal, checks.HINT_CAUSAL_NO_DIAG),
    (causal_one_ahead, checks.HINT_CAUSAL_ONE_AHEAD),
    (causal_upper, checks.HINT_CAUSAL_UPPER),
    (causal_float, checks.HINT_CAUSAL_DTYPE),
    (causal_additive, checks.HINT_CAUSAL_ADDITIVE),
    (causal_flat, "has shape (T, T)"),
]


# ---------------------------------------------------------------- scaled dot-product attention
def sdpa_ok(q, k, v, mask=None):
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    attn_weights = torch.softmax(attn_scores, dim=-1)
    if mask is not None:  # a query with no key to attend to: zeros, not NaN
        attn_weights = attn_weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return attn_weights @ v, attn_weights


def make_sdpa(scale=True, axis=-1, kq=False, mask_mode="fill", softmax=None, order="cw", detach=False,
              empty_rows="zeros"):
    def sdpa(q, k, v, mask=None):
        attn_scores = k @ q.transpose(-2, -1) if kq else q @ k.transpose(-2, -1)
        if scale:
            attn_scores = attn_scores / math.sqrt(q.shape[-1])
        if mask is not None and mask_mode == "fill":
            attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
        elif mask is not None and mask_mode == "inverted":
            attn_scores = attn_scores.masked_fill(mask, float("-inf"))
        elif mask is not None and mask_mode == "zero":
            attn_scores = attn_scores.masked_fill(~mask, 0.0)
        elif mask is not None and mask_mode == "big_negative":
            attn_scores = attn_scores.masked_fill(~mask, -1e9)
        attn_weights = softmax(attn_scores) if softmax else torch.softmax(attn_scores, dim=axis)
        if mask is not None and mask_mode == "after":
            attn_weights = attn_weights * mask
        if mask is not None and empty_rows == "zeros":  # a query with no key: zeros (the right answer)
            attn_weights = attn_weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
        if detach:
            attn_weights = attn_weights.detach()
        context = attn_weights @ v
        return {"cw": (context, attn_weights), "wc": (attn_weights, context), "c": context}[order]
    return sdpa


SDPA_WRONG = [
    (make_sdpa(scale=False), checks.HINT_NO_SCALE),
    (make_sdpa(axis=-2), checks.HINT_AXIS),
    (make_sdpa(kq=True), checks.HINT_KQ),
    (make_sdpa(mask_mode="after"), checks.HINT_MASK_AFTER),
    (make_sdpa(mask_mode="inverted"), checks.HINT_MASK_INVERTED),
    (make_sdpa(mask_mode="zero"), checks.HINT_MASK_ZERO),
    (make_sdpa(mask_mode="ignore"), checks.HINT_MASK_IGNORED),
    (make_sdpa(softmax=softmax_naive), checks.HINT_UNSTABLE),
    (make_sdpa(order="wc"), checks.HINT_ORDER),
    (make_sdpa(order="c"), checks.HINT_PAIR),
    (make_sdpa(detach=True), "avoid .detach()"),
    (make_sdpa(empty_rows="nan"), checks.HINT_EMPTY_ROW),           # NaN for a query with no key: not the
    (make_sdpa(empty_rows="nan", mask_mode="big_negative"), checks.HINT_EMPTY_ROW),  # stability hint
]


CHECKS = [
    (checks.check_softmax, softmax_ok, SOFTMAX_WRONG),
    (checks.check_attention_scores, scores_ok, SCORES_WRONG),
    (checks.check_causal_mask, causal_ok, CAUSAL_WRONG),
    (checks.check_scaled_dot_product_attention, sdpa_ok, SDPA_WRONG),
]
ALL_WRONG = [(check_fn, fn, hint) for check_fn, _, wrong in CHECKS for fn, hint in wrong]


@pytest.mark.parametrize("check_fn, solution", [(c, s) for c, s, _ in CHECKS], ids=lambda x: getattr(x, "__name__", ""))
def test_reference_solution_passes(check_fn, solution):
    result = check_fn(solution)
    assert result.passed, repr(result)
    assert repr(result).startswith("✅") and "passed (" in repr(result)


def test_tfmlib_itself_passes():
    assert checks.check_causal_mask(tfm_causal_mask).passed
    assert checks.check_softmax(functools.partial(torch.softmax, dim=-1)).passed
    assert checks.check_scaled_dot_product_attention(tfm_attention).passed
    assert checks.check_scaled_dot_product_attention(make_sdpa(mask_mode="big_negative")).passed
    assert checks.check_scaled_dot_product_attention(make_sdpa(softmax=softmax_ok)).passed


@pytest.mark.parametrize("check_fn", [c for c, _, _ in CHECKS], ids=lambda c: c.__name__)
def test_stub_is_not_implemented(check_fn):
    result = check_fn(stub)
    assert result.status == "not implemented", repr(result)
    assert "not implemented yet" in repr(result)


@pytest.mark.parametrize("check_fn, wrong, hint", ALL_WRONG,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(ALL_WRONG)])
def test_wrong_implementation_fails_with_its_hint(check_fn, wrong, hint):
    result = check_fn(wrong)
    text = repr(result)
    assert result.status == "failed", text
    assert text.startswith("❌")
    assert "Traceback" not in text
    if hint is not None:
        assert result.hint is not None and hint in result.hint, text


def test_every_check_has_at_least_three_wrong_versions_with_hints():
    for check_fn, _, wrong in CHECKS:
        assert sum(hint is not None for _, hint in wrong) >= 3, check_fn.__name__


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_scaled_dot_product_attention(sdpa_ok)
    assert torch.equal(torch.rand(3), expected)
