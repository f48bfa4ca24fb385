"""Checks for lesson 13, modern LLM architecture.

    check_rms_norm(rms_norm)               fn(x (..., C), weight (C,), eps) -> (..., C), with gradients
    check_rope_interleaved(rope)           fn(x (..., T, hs), positions (T,), base) -> (..., T, hs),
                                           neighbour pairs (2k, 2k + 1), as in the RoFormer paper
    check_swiglu(swiglu)                   fn(x (..., C), w_gate (F, C), w_up (F, C), w_down (C, F)) -> (..., C)

Each compares the learner's function with tfmlib's reference on random inputs and edge cases
and names the usual mistake when the output equals what that mistake computes.

Shape legend: B batch, T sequence length, C d_model, F d_ff, hs head size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layers import rms_norm as reference_rms_norm
from ..positions import apply_rope, rope_cache
from .core import CheckFailed, call, check, expect_close, grad_of

__all__ = ["check_rms_norm", "check_rope_interleaved", "check_swiglu"]

HINT_RMS_CENTRED = ("RMSNorm does not subtract the mean (that is LayerNorm): divide x by sqrt(mean(x^2) + eps) "
                    "directly.")
HINT_RMS_NO_SQRT = "divide by the ROOT mean square, sqrt(mean(x^2) + eps): you divided by the mean square itself."
HINT_RMS_SUM = "take the MEAN of x^2 over the C features (.mean(-1)), not the sum."
HINT_RMS_EPS_OUTSIDE = "eps goes inside the square root: sqrt(mean(x^2) + eps), not sqrt(mean(x^2)) + eps."
HINT_RMS_AXIS = "normalise each position over its C features: the mean runs over the last axis (dim=-1, keepdim=True)."
HINT_RMS_NO_WEIGHT = "multiply by the learned weight (one per feature) at the end."
HINT_RMS_STD = ("x.std() subtracts the mean and divides by C - 1: use the root mean square, "
                "x.pow(2).mean(-1, keepdim=True).sqrt().")
HINT_RMS_NO_GRAD = "gradients must flow through your RMSNorm: avoid .detach(), .item() or .data."

HINT_ROPE_HALF = ("this exercise pairs NEIGHBOURS (2k, 2k + 1), as the paper does; you paired feature j with "
                  "j + hs/2 (the rotate-half layout of lesson 05).")
HINT_ROPE_SIGN = ("a rotation by +angle maps (a, b) to (a cos - b sin, a sin + b cos): your signs rotate by "
                  "-angle.")
HINT_ROPE_EXPONENT = ("pair k turns at frequency base^(-2k/hs) for k = 0 .. hs/2 - 1: you used k/hs (or 2k/hs "
                      "with k up to hs - 1).")
HINT_ROPE_POSITIONS = "use the given position ids, not 0 .. T-1: token t sits at positions[t]."
HINT_ROPE_SWAPPED = "the angle's cosine multiplies x and its sine multiplies the partner: cos and sin are swapped."
HINT_ROPE_SAME_ANGLE = ("each pair has its own frequency: the angle of pair k at position p is "
                        "p * base^(-2k/hs), one per pair, not one for the whole vector.")

HINT_SWIGLU_SWAPPED = "SiLU goes on the GATE branch: silu(x W_gate^T) * (x W_up^T); you gated the up branch."
HINT_SWIGLU_SIGMOID = "SwiGLU gates with SiLU, silu(z) = z * sigmoid(z), not with a bare sigmoid (that is GLU)."
HINT_SWIGLU_GELU = "SwiGLU's gate is SiLU (F.silu), not GELU (that would be GEGLU)."
HINT_SWIGLU_RELU = "SwiGLU's gate is SiLU (F.silu), not ReLU (that would be ReGLU)."
HINT_SWIGLU_AFTER = "apply SiLU to the gate branch BEFORE multiplying: silu(g) * u, not silu(g * u)."
HINT_SWIGLU_NO_GATE = "multiply the two branches: silu(x W_gate^T) * (x W_up^T); you dropped the up branch."
HINT_SWIGLU_TRANSPOSE = ("the weights are stored like nn.Linear's, (out_features, in_features): compute "
                         "x @ w.T (or F.linear(x, w)).")


# ---------------------------------------------------------------- RMSNorm
def _rms_variant(x, weight, eps, mistake=""):
    if mistake == "centred":
        x = x - x.mean(-1, keepdim=True)
    axis = 0 if mistake == "axis" else -1
    mean_square = x.pow(2).sum(axis, keepdim=True) if mistake == "sum" else x.pow(2).mean(axis, keepdim=True)
    if mistake == "no_sqrt":
        out = x / (mean_square + eps)
    elif mistake == "eps_outside":
        out = x / (mean_square.sqrt() + eps)
    elif mistake == "std":
        out = x / (x.std(-1, keepdim=True) + eps)
    else:
        out = x * torch.rsqrt(mean_square + eps)
    return out if mistake == "no_weight" else out * weight


RMS_MISTAKES = {"centred": HINT_RMS_CENTRED, "no_sqrt": HINT_RMS_NO_SQRT, "sum": HINT_RMS_SUM,
                "eps_outside": HINT_RMS_EPS_OUTSIDE, "axis": HINT_RMS_AXIS, "no_weight": HINT_RMS_NO_WEIGHT,
                "std": HINT_RMS_STD}


@check("rms_norm")
def check_rms_norm(fn):
    """fn(x (..., C), weight (C,), eps) -> x / sqrt(mean(x^2) + eps) * weight, mean over the last axis."""
    cases = [((2, 5, 8), 1e-6), ((3, 16), 1e-5), ((1, 1, 4), 0.5), ((4, 3, 7), 1e-6)]
    gen = torch.Generator().manual_seed(1)
    for shape, eps in cases:
        x = torch.randn(shape, generator=gen) * 3 + 1                   # a mean far from 0 shows centring
        weight = 1 + 0.5 * torch.randn(shape[-1], generator=gen)
        what = f"rms_norm on x of shape {shape}, eps={eps}"
        mistakes = {hint: _rms_variant(x, weight, eps, name) for name, hint in RMS_MISTAKES.items()
                    if not (name == "axis" and shape[0] == 1)}
        expect_close(call(fn, x, weight, eps), reference_rms_norm(x, weight, eps), what, mistakes=mistakes,
                     atol=1e-5, rtol=1e-4, hint="y = x / sqrt(mean(x^2 over the last axis) + eps) * weight")
    x = torch.randn(2, 3, 6, generator=gen)
    weight = torch.rand(6, generator=gen) + 0.5
    grads = grad_of(lambda a, w: fn(a, w, 1e-6), x, weight)
    ref = grad_of(lambda a, w: reference_rms_norm(a, w, 1e-6), x, weight)
    for name, g, r in zip(("x", "weight"), grads, ref):
        if g is None:
            raise CheckFailed(f"no gradient reached {name}", HINT_RMS_NO_GRAD)
        expect_close(g, r, f"the gradient with respect to {name}", hint=HINT_RMS_NO_GRAD)
    return len(cases) + 1


# ---------------------------------------------------------------- RoPE, neighbour pairs
def _rope_variant(x, positions, base, mistake=""):
    hs = x.shape[-1]
    if mistake == "half":
        cos, sin = rope_cache(int(positions.max()) + 1, hs, base, pairing="half")
        return apply_rope(x, cos, sin, pairing="half", positions=positions)
    k = torch.arange(hs // 2, dtype=torch.float64)
    exponent = k / hs if mistake == "exponent" else 2 * k / hs
    inv_freq = base ** -exponent                                                       # (hs/2,)
    if mistake == "same_angle":
        inv_freq = torch.ones_like(inv_freq)
    pos = torch.arange(len(positions)) if mistake == "positions" else positions
    angle = pos.double()[:, None] * inv_freq                                           # (T, hs/2)
    cos, sin = angle.cos(), angle.sin()
    if mistake == "swapped":
        cos, sin = sin, cos
    if mistake == "sign":
        sin = -sin
    a, b = x.double()[..., 0::2], x.double()[..., 1::2]                                # (..., T, hs/2)
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)                  # (..., T, hs/2, 2)
    return out.flatten(-2).to(x.dtype)                                                 # (..., T, hs)


ROPE_MISTAKES = {"half": HINT_ROPE_HALF, "sign": HINT_ROPE_SIGN, "exponent": HINT_ROPE_EXPONENT,
                 "positions": HINT_ROPE_POSITIONS, "swapped": HINT_ROPE_SWAPPED, "same_angle": HINT_ROPE_SAME_ANGLE}


@check("rope_interleaved")
def check_rope_interleaved(fn):
    """fn(x (..., T, hs), positions (T,), base) rotates each neighbour pair (2k, 2k+1) of row t by
    positions[t] * base^(-2k/hs)."""
    gen = torch.Generator().manual_seed(2)
    cases = [((1, 5, 4), torch.tensor([3, 4, 5, 6, 7]), 10000.0),
             ((2, 3, 6, 8), torch.tensor([0, 1, 2, 3, 4, 5]), 10000.0),
             ((2, 4, 16), torch.tensor([9, 2, 30, 5]), 100.0),
             ((3, 1, 2), torch.tensor([11]), 10000.0)]
    for shape, positions, base in cases:
        x = torch.randn(shape, generator=gen)
        what = f"rope on x of shape {shape} at positions {positions.tolist()}, base {base:g}"
        mistakes = {hint: _rope_variant(x, positions, base, name) for name, hint in ROPE_MISTAKES.items()}
        expect_close(call(fn, x, positions, base), _rope_variant(x, positions, base), what, mistakes=mistakes,
                     atol=1e-5, rtol=1e-4, hint="pair k = features (2k, 2k + 1) turns by the angle "
                     "positions[t] * base^(-2k/hs): (a, b) -> (a cos - b sin, a sin + b cos).")
    x = torch.randn(2, 6, 8, generator=gen)
    positions = torch.arange(2, 8)
    grads = grad_of(lambda a: fn(a, positions, 10000.0), x)
    ref = grad_of(lambda a: _rope_variant(a, positions, 10000.0), x)
    if grads[0] is None:
        raise CheckFailed("no gradient reached x", "avoid .detach(), .item() or in-place edits of x.")
    expect_close(grads[0], ref[0], "the gradient with respect to x")
    return len(cases) + 1


# ---------------------------------------------------------------- SwiGLU
def _swiglu_variant(x, w_gate, w_up, w_down, mistake=""):
    g, u = F.linear(x, w_gate), F.linear(x, w_up)
    if mistake == "swapped":
        g, u = u, g
    act = {"sigmoid": torch.sigmoid, "gelu": F.gelu, "relu": F.relu}.get(mistake, F.silu)
    if mistake == "after":
        hidden = F.silu(g * u)
    elif mistake == "no_gate":
        hidden = F.silu(g)
    else:
        hidden = act(g) * u
    return F.linear(hidden, w_down)


SWIGLU_MISTAKES = {"swapped": HINT_SWIGLU_SWAPPED, "sigmoid": HINT_SWIGLU_SIGMOID, "gelu": HINT_SWIGLU_GELU,
                   "relu": HINT_SWIGLU_RELU, "after": HINT_SWIGLU_AFTER, "no_gate": HINT_SWIGLU_NO_GATE}


@check("swiglu")
def check_swiglu(fn):
    """fn(x (..., C), w_gate (F, C), w_up (F, C), w_down (C, F)) -> W_down(silu(W_gate x) * W_up x)."""
    gen = torch.Generator().manual_seed(3)
    cases = [((2, 5, 8), 12), ((3, 6), 6), ((1, 1, 4), 10), ((2, 3, 16), 40)]
    for shape, d_ff in cases:
        C = shape[-1]
        x = torch.randn(shape, generator=gen)
        w_gate, w_up = torch.randn(d_ff, C, generator=gen), torch.randn(d_ff, C, generator=gen)
        w_down = torch.randn(C, d_ff, generator=gen) / d_ff ** 0.5
        what = f"swiglu on x of shape {shape} with d_ff={d_ff}"
        mistakes = {hint: _swiglu_variant(x, w_gate, w_up, w_down, name) for name, hint in SWIGLU_MISTAKES.items()}
        if d_ff == C:  # square weights: forgetting the transpose runs, but computes x @ w
            mistakes[HINT_SWIGLU_TRANSPOSE] = _swiglu_variant(x, w_gate.T, w_up.T, w_down.T)
        try:
            out = call(fn, x, w_gate, w_up, w_down)
        except CheckFailed as e:
            shapes = "mat1 and mat2" in e.message or "size of tensor" in e.message
            raise CheckFailed(e.message, HINT_SWIGLU_TRANSPOSE if shapes else e.hint) from None
        expect_close(out, _swiglu_variant(x, w_gate, w_up, w_down), what, mistakes=mistakes, atol=1e-4, rtol=1e-4,
                     hint="out = (silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T")
    return len(cases)
