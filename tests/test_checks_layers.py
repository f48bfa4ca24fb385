"""The lesson-06 checks catch realistic wrong implementations, with the right hint,
and pass the reference solution."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_fails, stub
import tfmlib.checks.layers as cl
from tfmlib.layers import FeedForward as ReferenceFeedForward
from tfmlib.layers import layer_norm as reference_layer_norm


# ---------------------------------------------------------------- layer_norm

def ln_good(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_over_tokens(x, weight, bias, eps=1e-5):  # statistics over T, like a BatchNorm over the sequence
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_over_sequence(x, weight, bias, eps=1e-5):  # one mean for all tokens and features of an example
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_unbiased(x, weight, bias, eps=1e-5):  # torch.var's default divides by C - 1
    mean = x.mean(dim=-1, keepdim=True)
    var = torch.var(x, dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_std(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps) * weight + bias


def ln_eps_outside(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    std = x.var(dim=-1, keepdim=True, unbiased=False).sqrt()
    return (x - mean) / (std + eps) * weight + bias


def ln_no_eps(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / x.var(dim=-1, keepdim=True, unbiased=False).sqrt() * weight + bias


def ln_fixed_eps(x, weight, bias, eps=1e-5):
    return ln_good(x, weight, bias)  # ignores the eps it is given


def ln_swapped(x, weight, bias, eps=1e-5):
    return ln_good(x, bias, weight, eps)


def ln_no_affine(x, weight, bias, eps=1e-5):
    return ln_good(x, torch.ones_like(weight), torch.zeros_like(bias), eps)


def ln_variance(x, weight, bias, eps=1e-5):  # forgot the square root
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / (x.var(dim=-1, keepdim=True, unbiased=False) + eps) * weight + bias


def ln_in_place(x, weight, bias, eps=1e-5):
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    x -= x.mean(dim=-1, keepdim=True)
    return x / torch.sqrt(var + eps) * weight + bias


def ln_detached(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True).detach()
    var = x.var(dim=-1, keepdim=True, unbiased=False).detach()
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def test_layer_norm_reference_and_stub():
    assert cl.check_layer_norm(ln_good).passed
    assert cl.check_layer_norm(reference_layer_norm).passed
    assert cl.check_layer_norm(lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, eps)).passed
    assert cl.check_layer_norm(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (ln_over_tokens, cl.HINT_LN_AXIS),
    (ln_over_sequence, cl.HINT_LN_AXIS),
    (ln_unbiased, cl.HINT_LN_UNBIASED),
    (ln_std, cl.HINT_LN_UNBIASED),
    (ln_eps_outside, cl.HINT_LN_EPS_OUTSIDE),
    (ln_no_eps, cl.HINT_LN_NO_EPS),
    (ln_fixed_eps, cl.HINT_LN_EPS_ARG),
    (ln_swapped, cl.HINT_LN_SWAPPED),
    (ln_no_affine, cl.HINT_LN_NO_AFFINE),
    (ln_variance, cl.HINT_LN_NO_SQRT),
    (ln_in_place, cl.HINT_IN_PLACE),
    (ln_detached, cl.HINT_DETACHED),
])
def test_layer_norm_wrong(wrong, hint):
    assert_fails(cl.check_layer_norm(wrong), hint)


# ---------------------------------------------------------------- FeedForward

class FFNBase(nn.Module):
    """The exercise's given __init__; subclasses write forward."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)


class FFNGood(FFNBase):
    def forward(self, x):
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class FFNFunctionalDropout(FFNBase):  # F.dropout with training=self.training is right too
    def forward(self, x):
        return self.linear2(F.dropout(F.relu(self.linear1(x)), self.dropout.p, training=self.training))


class FFNNoActivation(FFNBase):
    def forward(self, x):
        return self.linear2(self.dropout(self.linear1(x)))


class FFNActivationOnOutput(FFNBase):
    def forward(self, x):
        return torch.relu(self.linear2(self.dropout(self.linear1(x))))


class FFNActivationTwice(FFNBase):
    def forward(self, x):
        return F.relu(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class FFNGelu(FFNBase):
    def forward(self, x):
        return self.linear2(self.dropout(F.gelu(self.linear1(x))))


class FFNResidual(FFNBase):
    def forward(self, x):
        return x + self.linear2(self.dropout(F.relu(self.linear1(x))))


class FFNDropoutAlwaysOn(FFNBase):  # F.dropout's training defaults to True: drops in eval mode too
    def forward(self, x):
        return self.linear2(F.dropout(F.relu(self.linear1(x)), self.dropout.p))


class FFNDropoutOnInput(FFNBase):
    def forward(self, x):
        return self.linear2(F.relu(self.linear1(self.dropout(x))))


class FFNDropoutOnOutput(FFNBase):
    def forward(self, x):
        return self.dropout(self.linear2(F.relu(self.linear1(x))))


class FFNNoDropout(FFNBase):
    def forward(self, x):
        return self.linear2(F.relu(self.linear1(x)))


class FFNNoSecondLayer(FFNBase):
    def forward(self, x):
        return self.dropout(F.relu(self.linear1(x)))


class FFNRenamed(nn.Module):  # changed the given __init__
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x):
        return self.net(x)


class FFNStub(FFNBase):
    def forward(self, x):
        raise NotImplementedError("write forward")


def test_feed_forward_reference_and_stub():
    assert cl.check_feed_forward(FFNGood).passed
    assert cl.check_feed_forward(FFNFunctionalDropout).passed
    assert cl.check_feed_forward(ReferenceFeedForward).passed
    assert cl.check_feed_forward(FFNStub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (FFNNoActivation, cl.HINT_FFN_NO_ACTIVATION),
    (FFNActivationOnOutput, cl.HINT_FFN_ACT_OUTPUT),
    (FFNActivationTwice, cl.HINT_FFN_ACT_OUTPUT),
    (FFNGelu, cl.HINT_FFN_GELU),
    (FFNResidual, cl.HINT_FFN_RESIDUAL),
    (FFNDropoutAlwaysOn, cl.HINT_FFN_DROPOUT_EVAL),
    (FFNDropoutOnInput, cl.HINT_FFN_DROPOUT_INPUT),
    (FFNDropoutOnOutput, cl.HINT_FFN_DROPOUT_OUTPUT),
    (FFNNoDropout, cl.HINT_FFN_NO_DROPOUT),
    (FFNNoSecondLayer, cl.HINT_FFN_WIDTH),
    (FFNRenamed, cl.HINT_FFN_INIT),
])
def test_feed_forward_wrong(wrong, hint):
    assert_fails(cl.check_feed_forward(wrong), hint)


# ---------------------------------------------------------------- residual_sublayer

def res_good(x, sublayer, norm, norm_first):
    if norm_first:
        return x + sublayer(norm(x))
    return norm(x + sublayer(x))


def res_swapped(x, sublayer, norm, norm_first):
    return res_good(x, sublayer, norm, not norm_first)


def res_always_post(x, sublayer, norm, norm_first):  # ignores norm_first
    return norm(x + sublayer(x))


def res_no_residual(x, sublayer, norm, norm_first):
    return sublayer(norm(x)) if norm_first else norm(sublayer(x))


def res_normed_skip(x, sublayer, norm, norm_first):  # pre-LN that adds norm(x) instead of x
    if norm_first:
        x = norm(x)
        return x + sublayer(x)
    return norm(x + sublayer(x))


def res_norm_branch(x, sublayer, norm, norm_first):  # post-LN that normalises only the branch
    if norm_first:
        return x + sublayer(norm(x))
    return x + norm(sublayer(x))


def res_two_norms(x, sublayer, norm, norm_first):
    if norm_first:
        return norm(x + sublayer(norm(x)))
    return norm(x + sublayer(x))


def test_residual_sublayer_reference_and_stub():
    assert cl.check_residual_sublayer(res_good).passed
    assert cl.check_residual_sublayer(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (res_swapped, cl.HINT_RES_WANT_PRE),
    (res_always_post, cl.HINT_RES_WANT_PRE),
    (res_no_residual, cl.HINT_RES_MISSING),
    (res_normed_skip, cl.HINT_RES_NORMED_SKIP),
    (res_norm_branch, cl.HINT_RES_NORM_BRANCH),
    (res_two_norms, cl.HINT_RES_TWO_NORMS),
])
def test_residual_sublayer_wrong(wrong, hint):
    assert_fails(cl.check_residual_sublayer(wrong), hint)


def test_residual_sublayer_always_pre_gets_the_post_hint():
    def always_pre(x, sublayer, norm, norm_first):
        return x + sublayer(norm(x))
    assert_fails(cl.check_residual_sublayer(always_pre), cl.HINT_RES_WANT_POST)


# ---------------------------------------------------------------- encoder_block

def block_good(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    x = res_good(x, lambda h: self_attn(h, mask=mask)[0], norm1, norm_first)
    return res_good(x, ffn, norm2, norm_first)


def block_ffn_first(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    x = res_good(x, ffn, norm1, norm_first)
    return res_good(x, lambda h: self_attn(h, mask=mask)[0], norm2, norm_first)


def block_one_norm(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    x = res_good(x, lambda h: self_attn(h, mask=mask)[0], norm1, norm_first)
    return res_good(x, ffn, norm1, norm_first)


def block_norms_swapped(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    return block_good(x, self_attn, ffn, norm2, norm1, norm_first, mask)


def block_no_mask(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    return block_good(x, self_attn, ffn, norm1, norm2, norm_first, None)


def block_tuple(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):  # forgets [0]
    x = res_good(x, lambda h: self_attn(h, mask=mask), norm1, norm_first)
    return res_good(x, ffn, norm2, norm_first)


def block_swapped(x, self_attn, ffn, norm1, norm2, norm_first, mask=None):
    return block_good(x, self_attn, ffn, norm1, norm2, not norm_first, mask)


def test_encoder_block_reference_and_stub():
    assert cl.check_encoder_block(block_good).passed
    assert cl.check_encoder_block(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (block_ffn_first, cl.HINT_BLOCK_ORDER),
    (block_one_norm, cl.HINT_BLOCK_NORMS),
    (block_norms_swapped, cl.HINT_BLOCK_NORMS),
    (block_no_mask, cl.HINT_BLOCK_MASK),
    (block_tuple, cl.HINT_BLOCK_TUPLE),
    (block_swapped, cl.HINT_RES_WANT_PRE),
])
def test_encoder_block_wrong(wrong, hint):
    assert_fails(cl.check_encoder_block(wrong), hint)


def test_reprs_are_one_verdict_with_a_hint():
    result = cl.check_layer_norm(ln_unbiased)
    text = repr(result)
    assert text.startswith("❌ layer_norm:") and "Traceback" not in text
    assert repr(cl.check_layer_norm(ln_good)).startswith("✅ layer_norm: passed")
