"""The lesson-13 checks accept correct implementations, reject realistic wrong ones with the
right hint, and report a stub as "not implemented"."""
import math

import pytest
import torch
import torch.nn.functional as F

from tfmlib.checks import modern as checks


def stub(*args, **kwargs):
    raise NotImplementedError("write your code here")


# ---------------------------------------------------------------- RMSNorm
def rms_ok(x, weight, eps):
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_centred(x, weight, eps):
    x = x - x.mean(-1, keepdim=True)
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_no_sqrt(x, weight, eps):
    return weight * x / (x.pow(2).mean(-1, keepdim=True) + eps)


def rms_sum(x, weight, eps):
    return weight * x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def rms_eps_outside(x, weight, eps):
    return weight * x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps)


def rms_no_weight(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_std(x, weight, eps):
    return weight * x / (x.std(-1, keepdim=True) + eps)


def rms_detached(x, weight, eps):
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps).detach()


@pytest.mark.parametrize("fn,hint", [
    (rms_centred, checks.HINT_RMS_CENTRED), (rms_no_sqrt, checks.HINT_RMS_NO_SQRT), (rms_sum, checks.HINT_RMS_SUM),
    (rms_eps_outside, checks.HINT_RMS_EPS_OUTSIDE), (rms_no_weight, checks.HINT_RMS_NO_WEIGHT),
    (rms_std, checks.HINT_RMS_STD), (rms_detached, checks.HINT_RMS_NO_GRAD)])
def test_rms_norm_mistakes_get_their_hint(fn, hint):
    result = checks.check_rms_norm(fn)
    assert not result.passed and result.hint == hint, result


def test_rms_norm_accepts_correct_and_reports_stub():
    assert checks.check_rms_norm(rms_ok).passed
    assert checks.check_rms_norm(lambda x, w, eps: F.rms_norm(x, (x.shape[-1],), w, eps)).passed
    assert checks.check_rms_norm(stub).status == "not implemented"


# ---------------------------------------------------------------- RoPE, neighbour pairs
def make_rope(pairs="neighbours", sign=1, exponent="2k", use_positions=True, swap=False):
    def rope(x, positions, base):
        hs, T = x.shape[-1], x.shape[-2]
        k = torch.arange(hs // 2, dtype=torch.float32)
        inv_freq = base ** -((2 * k if exponent == "2k" else k) / hs)
        pos = positions if use_positions else torch.arange(T)
        angle = pos.float()[:, None] * inv_freq
        cos, sin = angle.cos(), sign * angle.sin()
        if swap:
            cos, sin = sin, cos
        if pairs == "neighbours":
            a, b = x[..., 0::2], x[..., 1::2]
        else:
            a, b = x[..., : hs // 2], x[..., hs // 2:]
        first, second = a * cos - b * sin, a * sin + b * cos
        if pairs == "neighbours":
            return torch.stack([first, second], -1).flatten(-2)
        return torch.cat([first, second], -1)
    return rope


def rope_complex(x, positions, base):  # the paper's complex-number form, as Meta's code writes it
    hs = x.shape[-1]
    inv_freq = base ** -(torch.arange(0, hs, 2).float() / hs)
    rotors = torch.polar(torch.ones(len(positions), hs // 2), positions.float()[:, None] * inv_freq)
    return torch.view_as_real(torch.view_as_complex(x.reshape(*x.shape[:-1], hs // 2, 2)) * rotors).flatten(-2)


@pytest.mark.parametrize("fn,hint", [
    (make_rope(pairs="half"), checks.HINT_ROPE_HALF), (make_rope(sign=-1), checks.HINT_ROPE_SIGN),
    (make_rope(exponent="k"), checks.HINT_ROPE_EXPONENT), (make_rope(use_positions=False), checks.HINT_ROPE_POSITIONS),
    (make_rope(swap=True), checks.HINT_ROPE_SWAPPED)])
def test_rope_mistakes_get_their_hint(fn, hint):
    result = checks.check_rope_interleaved(fn)
    assert not result.passed and result.hint == hint, result


def test_rope_accepts_correct_forms_and_reports_stub():
    assert checks.check_rope_interleaved(make_rope()).passed
    assert checks.check_rope_interleaved(rope_complex).passed
    assert checks.check_rope_interleaved(stub).status == "not implemented"


# ---------------------------------------------------------------- SwiGLU
def swiglu_ok(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def make_swiglu(act=F.silu, swap=False, after=False, no_up=False):
    def swiglu(x, w_gate, w_up, w_down):
        g, u = x @ w_gate.T, x @ w_up.T
        if swap:
            g, u = u, g
        hidden = act(g * u) if after else (act(g) if no_up else act(g) * u)
        return hidden @ w_down.T
    return swiglu


def swiglu_no_transpose(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


@pytest.mark.parametrize("fn,hint", [
    (make_swiglu(swap=True), checks.HINT_SWIGLU_SWAPPED), (make_swiglu(act=torch.sigmoid), checks.HINT_SWIGLU_SIGMOID),
    (make_swiglu(act=F.gelu), checks.HINT_SWIGLU_GELU), (make_swiglu(act=F.relu), checks.HINT_SWIGLU_RELU),
    (make_swiglu(after=True), checks.HINT_SWIGLU_AFTER), (make_swiglu(no_up=True), checks.HINT_SWIGLU_NO_GATE),
    (swiglu_no_transpose, checks.HINT_SWIGLU_TRANSPOSE)])
def test_swiglu_mistakes_get_their_hint(fn, hint):
    result = checks.check_swiglu(fn)
    assert not result.passed and result.hint == hint, result


def test_swiglu_accepts_correct_and_reports_stub():
    assert checks.check_swiglu(swiglu_ok).passed
    assert checks.check_swiglu(lambda x, g, u, d: F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)).passed
    assert checks.check_swiglu(stub).status == "not implemented"
