"""Exercise feedback that names the mistake (issue 10, items 6-8): composite checks find the inner
attention mistake, the hints fit the symptom, in-place edits and endless loops are caught."""
import functools
import time

import pytest
import torch

import tfmlib.checks.attention as at
import tfmlib.checks.decoder as dec
import tfmlib.checks.multihead as mh
from helpers import assert_fails, assert_passes, learner_attention, learner_mha


# ---------------------------------------------------------------- 6. composite checks name the inner mistake
INNER = [  # found by probing the inner attention (one head, identity weights)
    (dict(mask_mode="after"), at.HINT_MASK_AFTER),
    (dict(mask_mode="zero"), at.HINT_MASK_ZERO),
    (dict(kq=True), at.HINT_KQ),
]


def test_learner_mha_helper_is_right_by_default():
    assert_passes(mh.check_multi_head_attention(learner_mha))


@pytest.mark.parametrize("switches, hint", INNER + [(dict(split="strided"), mh.HINT_SPLIT_STRIDED),
                                                    (dict(split="tokens"), mh.HINT_SPLIT_TOKENS),
                                                    (dict(scale="none"), mh.HINT_NO_SCALE),
                                                    (dict(scale="d_k"), at.HINT_SCALE_DK),
                                                    (dict(axis=-2), mh.HINT_SOFTMAX_AXIS)],
                         ids=lambda v: str(v)[:30])
def test_multi_head_check_names_the_attention_mistake_inside(switches, hint):
    result = mh.check_multi_head_attention(functools.partial(learner_mha, **switches))
    assert_fails(result, hint)
    assert result.hint is not None


def _cross(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask=None, **switches):
    return learner_mha(x_dec, memory, W_q, W_k, W_v, W_o, n_heads, memory_mask, **switches)


def test_cross_attention_helper_is_right_by_default():
    assert_passes(dec.check_cross_attention(_cross))


@pytest.mark.parametrize("switches, hint", INNER + [(dict(split="tokens"), dec.HEAD_SPLIT),
                                                    (dict(scale="none"), dec.NO_SCALE),
                                                    (dict(axis=-2), dec.SOFTMAX_AXIS)], ids=lambda v: str(v)[:30])
def test_cross_attention_check_names_the_attention_mistake_inside(switches, hint):
    result = dec.check_cross_attention(functools.partial(_cross, **switches))
    assert_fails(result, hint)
    assert result.hint is not None


# ---------------------------------------------------------------- 7. hints that fit the symptom
def _softmax(scores):
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def test_a_float64_result_passes_gradients_included():
    assert_passes(at.check_softmax(lambda x: _softmax(x.double())))
    assert_passes(at.check_attention_scores(lambda q, k: q.double() @ k.double().transpose(-2, -1) / q.shape[-1] ** 0.5))

    def sdpa64(q, k, v, mask=None):
        context, weights = learner_attention(q.double(), k.double(), v.double(), mask)
        return context, weights.masked_fill(~mask.any(-1, keepdim=True), 0.0) if mask is not None else weights

    def sdpa64_fixed(q, k, v, mask=None):
        weights = sdpa64(q, k, v, mask)[1]
        return weights @ v.double(), weights
    assert_passes(at.check_scaled_dot_product_attention(sdpa64_fixed))


def test_nan_in_a_row_with_nothing_to_attend_to_gets_its_own_hint():
    result = at.check_scaled_dot_product_attention(learner_attention)  # right, except NaN for the empty row
    assert_fails(result, at.HINT_EMPTY_ROW)
    assert "Subtract each row's max" not in repr(result)


def test_swapped_pair_of_equal_shapes_and_weights_at_k():
    def swapped(q, k, v, mask=None):
        context, weights = learner_attention(q, k, v, mask)
        return weights, context
    # with d_v = T_k the two tensors have the same shape: the check still says "swapped"
    from tfmlib.checks.core import CheckFailed
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 4)
    with pytest.raises(CheckFailed, match="swapped") as info:
        at._attention_case(swapped, q, k, v, None, "equal shapes")
    assert info.value.hint == at.HINT_ORDER

    def weights_at_k(q, k, v, mask=None):
        context, weights = learner_attention(q, k, v, mask)
        return weights @ k, weights
    assert_fails(at.check_scaled_dot_product_attention(weights_at_k), at.HINT_WEIGHTS_K)


def test_right_values_in_the_wrong_shape_get_a_hint():
    from tfmlib.checks import check, call, expect_close

    @check("double")
    def check_double(fn):
        x = torch.randn(3, 4)
        expect_close(call(fn, x), 2 * x, "output")

    result = check_double(lambda x: (2 * x).T.reshape(3, 4))
    assert_fails(result, "values are right but arranged")
    result = check_double(lambda x: (2 * x).flatten())
    assert_fails(result, "view/reshape")


def test_changing_the_callers_tensor_in_place_fails():
    def softmax_in_place(scores):
        scores -= scores.max(dim=-1, keepdim=True).values   # edits the caller's tensor
        e = scores.exp()
        return e / e.sum(dim=-1, keepdim=True)
    result = at.check_softmax(softmax_in_place)   # the gradient case trips PyTorch's in-place error
    assert_fails(result, "in-place")
    assert "clone" in result.hint
    from tfmlib.checks import check, call, expect_close

    @check("double")
    def check_double(fn):  # no gradient case: only comparing the input before and after can tell
        x = torch.randn(3, 4)
        expect_close(call(fn, x.clone()), 2 * x, "output")

    result = check_double(lambda x: x.mul_(2))
    assert_fails(result, "changed its input `x` in place")
    assert "clone" in result.hint


# ---------------------------------------------------------------- 8. code that never returns
def test_an_endless_loop_gets_a_verdict_within_the_time_limit(monkeypatch):
    import tfmlib.checks.core as core
    monkeypatch.setattr(core, "TIME_LIMIT_S", 0.5)

    def forever(scores):
        while True:
            scores = scores + 0

    start = time.perf_counter()
    result = at.check_softmax(forever)
    assert time.perf_counter() - start < 5
    assert_fails(result, "did not finish within 0.5 s")
    assert "loop" in result.hint
    assert_passes(at.check_softmax(_softmax))  # the alarm is off again afterwards


# ---------------------------------------------------------------- 9. stubs named, try-it cells without tracebacks
def test_not_implemented_names_the_helper_that_is_still_a_stub():
    def causal_mask(T):
        raise NotImplementedError("write your code here")

    def sdpa(q, k, v, mask=None):
        mask = causal_mask(q.shape[-2]) if mask is None else mask
        return learner_attention(q, k, v, mask)
    result = at.check_scaled_dot_product_attention(sdpa)
    assert result.status == "not implemented"
    assert "`causal_mask` is still a stub" in result.message


def test_try_it_prints_one_line_instead_of_a_traceback(capsys):
    from tfmlib.checks import try_it

    def causal_mask(T):
        raise NotImplementedError("write your code here")

    with try_it():
        causal_mask(3)
    assert "`causal_mask`, which is still a stub" in capsys.readouterr().out
    with try_it():
        torch.ones(2, 3) @ torch.ones(2, 3)
    out = capsys.readouterr().out
    assert out.startswith("❌") and "RuntimeError" in out and "Traceback" not in out
    with try_it():
        print("fine")
    assert capsys.readouterr().out == "fine\n"


# ---------------------------------------------------------------- 6. pointing to the helper exercise that is wrong
NOTEBOOK_03 = '''
import math, torch

def softmax(scores):                      # exercise 1, wrong: divides by the sum of the whole tensor
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    return e / e.sum()

def attention_scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])

def scaled_dot_product_attention(q, k, v, mask=None):   # exercise 4: right, but uses the wrong softmax
    attn_scores = attention_scores(q, k)
    if mask is not None:
        attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    attn_weights = softmax(attn_scores)
    if mask is not None:
        attn_weights = attn_weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return attn_weights @ v, attn_weights
'''

NOTEBOOK_04 = '''
import math, torch

def split_heads(x, n_heads):              # exercise 1, wrong: head h takes features h, h + H, ...
    B, T, C = x.shape
    return x.view(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)

def merge_heads(x):
    B, H, T, hs = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * hs)   # consistent with the strided split

def repeat_kv(x, n_rep):
    return x.repeat_interleave(n_rep, dim=1)

def multi_head_attention(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None):
    C = x_q.shape[-1]
    hs = C // n_heads
    n_kv = W_k.shape[1] // hs
    q, k, v = split_heads(x_q @ W_q, n_heads), split_heads(x_kv @ W_k, n_kv), split_heads(x_kv @ W_v, n_kv)
    k, v = repeat_kv(k, n_heads // n_kv), repeat_kv(v, n_heads // n_kv)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o
'''


def _notebook(source):
    namespace = {}
    exec(compile(source, "<notebook>", "exec"), namespace)
    return namespace


def test_sdpa_check_points_to_the_wrong_softmax_it_calls():
    nb = _notebook(NOTEBOOK_03)
    result = at.check_scaled_dot_product_attention(nb["scaled_dot_product_attention"])
    assert_fails(result, "Your `softmax`, which this code calls, fails its own check")
    assert "fix `softmax` first" in result.hint


def test_multi_head_check_points_to_the_wrong_split_heads_it_calls():
    nb = _notebook(NOTEBOOK_04)
    result = mh.check_multi_head_attention(nb["multi_head_attention"])
    assert_fails(result, "Your `split_heads`")
    assert mh.HINT_SPLIT_STRIDED in result.hint


def test_encoder_block_check_points_to_the_wrong_residual_sublayer():
    import tfmlib.checks.layers as cl
    nb = _notebook('''
def residual_sublayer(x, sublayer, norm, norm_first):   # wrong: normalises the skip path too
    return norm(x) + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))

def encoder_block(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    x = residual_sublayer(x, lambda h: self_attn(h, mask=mask)[0], norm1, norm_first)
    return residual_sublayer(x, ffn, norm2, norm_first)
''')
    result = cl.check_encoder_block(nb["encoder_block"])
    assert_fails(result, "Your `residual_sublayer`")


def test_layer_norm_in_float64_passes_and_a_detached_variance_is_named():
    import tfmlib.checks.layers as cl

    def ln64(x, weight, bias, eps=1e-5):
        x = x.double()
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * weight.double() + bias.double()

    def ln_detached(x, weight, bias, eps=1e-5):
        mean = x.mean(-1, keepdim=True).detach()
        var = ((x - mean) ** 2).mean(-1, keepdim=True).detach()
        return (x - mean) / torch.sqrt(var + eps) * weight + bias

    assert_passes(cl.check_layer_norm(ln64))
    assert_fails(cl.check_layer_norm(ln_detached), cl.HINT_DETACHED)


def test_a_method_stub_is_named_with_its_class():
    import torch.nn as nn
    from tfmlib.checks.lora import check_lora_linear

    class LoRALinear(nn.Module):
        def __init__(self, base, r, alpha):
            super().__init__()
            raise NotImplementedError("keep base, freeze it; A random, B zeros")

    result = check_lora_linear(LoRALinear)
    assert result.status == "not implemented"
    assert "`LoRALinear.__init__` is still a stub" in result.message, result.message
