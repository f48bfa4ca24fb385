"""Checks for lesson 06: LayerNorm, the position-wise feed-forward network and Add & Norm.

    check_layer_norm(layer_norm)                layer_norm(x, weight, bias, eps=1e-5) -> like x
    check_feed_forward(FeedForward)             a module class: FeedForward(d_model, d_ff, dropout)
                                                with linear1, linear2, dropout; forward(x) to write
    check_residual_sublayer(residual_sublayer)  residual_sublayer(x, sublayer, norm, norm_first)
    check_encoder_block(encoder_block)          encoder_block(x, self_attn, ffn, norm1, norm2,
                                                norm_first, mask=None)

Each runs the learner's code against tfmlib's reference (``tfmlib.layers``, ``tfmlib.encoder``)
on random inputs and edge cases (a batch of one, T = 1, one feature, very large and very
small inputs, a custom eps, padding masks, train and eval mode) and names the usual mistake
when the learner's output equals what that mistake computes.

Shape legend: B batch, T sequence length, C d_model, F d_ff (hidden width), H heads.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..encoder import EncoderBlock
from ..layers import FeedForward as ReferenceFeedForward
from ..layers import LayerNorm
from ..layers import layer_norm as reference_layer_norm
from .core import CheckFailed, call, check, expect_close, expect_shape, expect_tensor, grad_of
from .probes import explain_failure, probe_helpers

__all__ = ["check_layer_norm", "check_feed_forward", "check_residual_sublayer", "check_encoder_block"]

# ---------------------------------------------------------------- hints
HINT_LN_AXIS = ("normalise each position over its own C features: mean and variance over the last axis "
                "(dim=-1, keepdim=True), not over the tokens, the batch or the whole sequence.")
HINT_LN_UNBIASED = ("LayerNorm uses the biased variance (divide by C): x.var(dim=-1, unbiased=False, keepdim=True). "
                    "torch.var, x.var and x.std divide by C - 1 unless told otherwise (and x.std() + eps puts eps "
                    "outside the square root).")
HINT_LN_EPS_OUTSIDE = "eps goes inside the square root: (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps)."
HINT_LN_NO_EPS = ("add eps to the variance before the square root, sqrt(var + eps): it matters when the features "
                  "of a position are (nearly) equal, and it stops a division by zero.")
HINT_LN_EPS_ARG = "use the eps argument you are given, not a fixed 1e-5."
HINT_LN_NO_SQRT = "divide by the standard deviation sqrt(var + eps), not by the variance."
HINT_LN_SWAPPED = "weight scales and bias shifts: x_hat * weight + bias (yours has them swapped)."
HINT_LN_NO_AFFINE = "after normalising, scale and shift: x_hat * weight + bias."
HINT_LN_ONE_FEATURE = ("with one feature the variance is 0, so x_hat = 0 / sqrt(0 + eps) = 0 and the output is the "
                       "bias. NaN means eps is missing or the variance divides by C - 1 = 0.")
HINT_IN_PLACE = "don't change the input in place (x -= mean, x.sub_(...)): compute new tensors."
HINT_DETACHED = "gradients flow through the mean and the variance too: don't .detach() them or use .item()."

HINT_FFN_NO_ACTIVATION = ("apply the activation (ReLU) between the two linear layers: without it, two linear "
                          "layers collapse into one linear map.")
HINT_FFN_ACT_OUTPUT = ("the ReLU goes on the hidden layer only (after linear1), not on the output of linear2: "
                       "the output must be able to take negative values.")
HINT_FFN_GELU = "this exercise's FFN uses ReLU, as in the 2017 paper (GELU came later, with BERT and GPT)."
HINT_FFN_RESIDUAL = ("the feed-forward network has no residual of its own: return linear2(...) only. "
                     "The residual is added around it by Add & Norm.")
HINT_FFN_DROPOUT_EVAL = ("dropout must do nothing in eval mode: use self.dropout (an nn.Dropout follows "
                         "model.train() / model.eval()), or F.dropout(h, p, training=self.training).")
HINT_FFN_DROPOUT_INPUT = ("dropout goes on the hidden activations (after the ReLU, before linear2), not on the "
                          "input x.")
HINT_FFN_DROPOUT_OUTPUT = ("dropout goes on the hidden activations (after the ReLU, before linear2); the dropout on "
                           "the FFN's output belongs to the residual sublayer.")
HINT_FFN_NO_DROPOUT = "in train mode, apply self.dropout to the hidden activations (after the ReLU, before linear2)."
HINT_FFN_WIDTH = "the hidden layer has d_ff features; return linear2(...), which brings them back to d_model."
HINT_FFN_INIT = "keep the given __init__ (self.linear1, self.linear2, self.dropout) and write only forward()."

HINT_RES_WANT_PRE = ("norm_first=True is pre-LN: normalise the sublayer's input and add the raw x, "
                     "x + sublayer(norm(x)); yours computed post-LN.")
HINT_RES_WANT_POST = ("norm_first=False is post-LN (the 2017 paper): add first, then normalise, "
                      "norm(x + sublayer(x)); yours computed pre-LN.")
HINT_RES_MISSING = ("the residual is missing: add the input x back (pre-LN: x + sublayer(norm(x)); "
                    "post-LN: norm(x + sublayer(x))).")
HINT_RES_NORMED_SKIP = ("the residual path carries x itself, not norm(x): x + sublayer(norm(x)). "
                        "Only the sublayer's input is normalised.")
HINT_RES_NORM_BRANCH = ("x + norm(sublayer(x)) normalises only the sublayer's output: pre-LN is "
                        "x + sublayer(norm(x)), post-LN normalises the sum, norm(x + sublayer(x)).")
HINT_RES_TWO_NORMS = "normalise once: pre-LN is x + sublayer(norm(x)) (no norm after the addition)."

HINT_BLOCK_ORDER = "attention comes first, then the feed-forward network (each inside its own Add & Norm)."
HINT_BLOCK_NORMS = ("each sublayer has its own LayerNorm: norm1 goes with self-attention, norm2 with the "
                    "feed-forward network.")
HINT_BLOCK_MASK = "pass the mask to self-attention: self_attn(h, mask=mask)."
HINT_BLOCK_TUPLE = ("self_attn(...) returns a tuple (output, attention weights): take the output, "
                    "self_attn(h, mask=mask)[0].")


def _expect_close(actual, expected, what: str, mistakes: list, **options) -> None:
    """expect_close, with the mistakes as a list of (hint, wrong output): one hint may fit several outputs."""
    expect_close(actual, expected, what, mistakes, **options)


# ---------------------------------------------------------------- LayerNorm
def _ln_variant(x, weight, bias, eps, mistake: str = "") -> torch.Tensor:
    """What a typical wrong layer_norm returns (mistake="" gives the right one)."""
    dims = {"axis_T": (-2,), "axis_batch": (0,), "axis_all": (-2, -1)}.get(mistake, (-1,))
    mean = x.mean(dim=dims, keepdim=True)
    if mistake in ("unbiased", "std") and x.shape[-1] == 1:
        return torch.full_like(x, float("nan"))  # C - 1 = 0 (computed without torch's warning)
    var = x.var(dim=dims, keepdim=True, unbiased=mistake in ("unbiased", "std"))
    eps = 1e-5 if mistake == "eps_fixed" else eps
    if mistake in ("eps_outside", "std"):
        x_hat = (x - mean) / (var.sqrt() + eps)
    elif mistake == "no_eps":
        x_hat = (x - mean) / var.sqrt()
    elif mistake == "no_sqrt":
        x_hat = (x - mean) / (var + eps)
    else:
        x_hat = (x - mean) / torch.sqrt(var + eps)
    if mistake == "swapped":
        return x_hat * bias + weight
    if mistake == "no_affine":
        return x_hat
    return x_hat * weight + bias


def _ln_mistakes(x, weight, bias, eps) -> list:
    pairs = [(HINT_LN_AXIS, "axis_T"), (HINT_LN_AXIS, "axis_all"), (HINT_LN_UNBIASED, "unbiased"),
             (HINT_LN_UNBIASED, "std"), (HINT_LN_EPS_OUTSIDE, "eps_outside"), (HINT_LN_NO_EPS, "no_eps"),
             (HINT_LN_NO_SQRT, "no_sqrt"), (HINT_LN_SWAPPED, "swapped"), (HINT_LN_NO_AFFINE, "no_affine")]
    if x.shape[0] > 1:
        pairs.append((HINT_LN_AXIS, "axis_batch"))
    if eps != 1e-5:
        pairs.append((HINT_LN_EPS_ARG, "eps_fixed"))
    with torch.no_grad():
        return [(hint, _ln_variant(x, weight, bias, eps, mistake)) for hint, mistake in pairs]


def _ln_detached_stats(x, weight, bias, eps=1e-5):
    """LayerNorm whose mean and variance are treated as constants (.detach()): same output, other gradient."""
    mean = x.mean(dim=-1, keepdim=True).detach()
    var = x.var(dim=-1, keepdim=True, unbiased=False).detach()
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


@check("layer_norm")
def check_layer_norm(fn):
    """fn(x (..., C), weight (C,), bias (C,), eps=1e-5) -> (..., C), normalised over the last axis."""
    # (shape, scale, shift, eps, description)
    cases = [((2, 5, 8), 2.0, 1.0, 1e-5, "a (2, 5, 8) batch"),
             ((1, 4, 16), 1.0, 0.0, 1e-5, "a batch of one, (1, 4, 16)"),
             ((3, 1, 8), 1.0, 0.0, 1e-5, "T = 1, (3, 1, 8)"),
             ((2, 3, 8), 1000.0, 500.0, 1e-5, "large inputs (values around 500 ± 1000)"),
             ((2, 3, 8), 1e-3, 0.0, 1e-5, "small inputs (standard deviation 0.001, where eps matters)"),
             ((2, 3, 8), 0.3, 0.0, 0.1, "eps = 0.1"),
             ((2, 3, 1), 1.0, 0.0, 1e-5, "one feature (C = 1)")]
    for shape, scale, shift, eps, what in cases:
        C = shape[-1]
        x = torch.randn(shape) * scale + shift
        weight, bias = torch.randn(C) * 0.5 + 1.0, torch.randn(C) * 0.5
        originals = (x.clone(), weight.clone(), bias.clone())
        out = call(fn, x, weight, bias, eps)
        expected = reference_layer_norm(*originals, eps=eps)
        _expect_close(out, expected, f"output on {what}", _ln_mistakes(*originals, eps),
                     hint=HINT_LN_ONE_FEATURE if C == 1 else None)
        if not (torch.equal(x, originals[0]) and torch.equal(weight, originals[1]) and torch.equal(bias, originals[2])):
            raise CheckFailed(f"your function changed its inputs on {what}", HINT_IN_PLACE)
    # gradients reach x, weight and bias, and equal the reference's
    x, weight, bias = torch.randn(2, 4, 8), torch.randn(8) + 1.0, torch.randn(8)
    learner = grad_of(fn, x, weight, bias)
    reference = grad_of(reference_layer_norm, x, weight, bias)
    detached = grad_of(_ln_detached_stats, x, weight, bias)  # what a detached mean/variance gives
    for g, g_ref, g_detached, name in zip(learner, reference, detached, ("x", "weight", "bias")):
        if g is None:
            raise CheckFailed(f"no gradient reaches {name}", HINT_DETACHED)
        expect_close(g, g_ref, f"gradient with respect to {name}", atol=1e-4,
                     mistakes=[(HINT_DETACHED, g_detached)])
    return len(cases) + 1


# ---------------------------------------------------------------- feed-forward
def _ffn_variant(ref: nn.Module, x: torch.Tensor, mistake: str = "", p: float = 0.0, train: bool = False):
    """What a typical wrong FeedForward.forward returns with ``ref``'s weights (call under a fixed seed)."""
    l1, l2 = ref.linear1, ref.linear2

    def drop(t):
        return F.dropout(t, p, training=train or mistake == "dropout_eval")

    if mistake == "dropout_input":
        x = drop(x)
    pre = l1(x)
    hidden = {"no_activation": pre, "gelu": F.gelu(pre), "act_output": pre}.get(mistake, F.relu(pre))
    if mistake not in ("dropout_input", "dropout_output", "no_dropout"):
        hidden = drop(hidden)
    out = l2(hidden)
    if mistake in ("act_output", "act_both"):
        out = F.relu(out)
    if mistake == "dropout_output":
        out = drop(out)
    if mistake == "residual":
        out = x + out
    return out


def _seeded(fn, *args, seed: int):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn(*args)


def _ffn_module(cls, C: int, d_ff: int, p: float, seed: int):
    """The learner's module, built by its own __init__, holding a seeded reference's weights."""
    module = call(cls, C, d_ff, p)
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"FeedForward({C}, {d_ff}, {p}) should build an nn.Module, got {type(module).__name__}",
                          "pass the class itself (check_feed_forward(FeedForward)), and keep its nn.Module base.")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = ReferenceFeedForward(C, d_ff, dropout=p)
    want = {name: tuple(t.shape) for name, t in ref.state_dict().items()}
    have = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    if want != have:
        raise CheckFailed(f"FeedForward({C}, {d_ff}, {p}) should hold the parameters {want}, yours has {have}",
                          HINT_FFN_INIT)
    module.load_state_dict(ref.state_dict())
    return module, ref


@check("FeedForward")
def check_feed_forward(cls):
    """cls(d_model, d_ff, dropout) -> module; module(x (..., C)) -> (..., C): linear2(dropout(relu(linear1(x))))."""
    # eval mode: dropout (p = 0.5) must do nothing; (shape, scale, description)
    cases = [((2, 5, 8), 1.0, "a (2, 5, 8) batch"),
             ((1, 3, 8), 1.0, "a batch of one"),
             ((2, 1, 8), 1.0, "T = 1"),
             ((2, 4, 8), 100.0, "large inputs (x * 100)"),
             ((6, 8), 1.0, "a (T, C) input with no batch axis")]
    n = 0
    for i, (shape, scale, what) in enumerate(cases):
        module, ref = _ffn_module(cls, 8, 32, 0.5, seed=i)
        module.eval()
        ref.eval()
        x = torch.randn(shape) * scale
        out = _seeded(lambda t: call(module, t), x.clone(), seed=100 + i)
        expect_shape(out, shape, f"output on {what} (eval mode)",
                     hint=HINT_FFN_WIDTH if isinstance(out, torch.Tensor) and out.shape[-1] == 32 else None)
        with torch.no_grad():
            expected = ref(x)
            mistakes = [(hint, _seeded(_ffn_variant, ref, x, mistake, 0.5, False, seed=100 + i)) for hint, mistake in
                        ((HINT_FFN_NO_ACTIVATION, "no_activation"), (HINT_FFN_ACT_OUTPUT, "act_output"),
                         (HINT_FFN_ACT_OUTPUT, "act_both"), (HINT_FFN_GELU, "gelu"),
                         (HINT_FFN_RESIDUAL, "residual"), (HINT_FFN_DROPOUT_EVAL, "dropout_eval"))]
        _expect_close(out, expected, f"output on {what} (eval mode)", mistakes)
        n += 1
    # train mode: dropout on the hidden activations, the same random mask as the reference's
    module, ref = _ffn_module(cls, 8, 32, 0.5, seed=7)
    module.train()
    ref.train()
    x = torch.randn(2, 5, 8)
    out = _seeded(lambda t: call(module, t), x.clone(), seed=7)
    with torch.no_grad():
        expected = _seeded(ref, x, seed=7)
        mistakes = [(hint, _seeded(_ffn_variant, ref, x, mistake, 0.5, True, seed=7)) for hint, mistake in
                    ((HINT_FFN_DROPOUT_INPUT, "dropout_input"), (HINT_FFN_DROPOUT_OUTPUT, "dropout_output"),
                     (HINT_FFN_NO_DROPOUT, "no_dropout"), (HINT_FFN_NO_ACTIVATION, "no_activation"),
                     (HINT_FFN_ACT_OUTPUT, "act_output"), (HINT_FFN_RESIDUAL, "residual"))]
    _expect_close(out, expected, "output in train mode with dropout = 0.5 (the same random seed as the reference)",
                  mistakes)
    n += 1
    # gradients reach the input (eval mode)
    module.eval()
    ref.eval()
    x = torch.randn(2, 3, 8)
    (g,) = grad_of(module, x)
    (g_ref,) = grad_of(ref, x)
    if g is None:
        raise CheckFailed("no gradient reaches the input x", "avoid .detach(), .item() and torch.no_grad() in forward.")
    expect_close(g, g_ref, "gradient with respect to x", atol=1e-4)
    return n + 1


# ---------------------------------------------------------------- Add & Norm
def _residual_variant(x, sublayer, norm, norm_first: bool, mistake: str = ""):
    """What a typical wrong residual_sublayer returns (mistake="" gives the right one)."""
    if mistake == "swapped":
        norm_first = not norm_first
    if mistake == "missing":
        return sublayer(norm(x)) if norm_first else norm(sublayer(x))
    if mistake == "normed_skip":
        return norm(x) + sublayer(norm(x))
    if mistake == "norm_branch":
        return x + norm(sublayer(x))
    if mistake == "two_norms":
        return norm(x + sublayer(norm(x)))
    return x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))


def _random_norm(C: int) -> LayerNorm:
    norm = LayerNorm(C)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(C) * 0.5 + 1.0)
        norm.bias.copy_(torch.randn(C) * 0.5)
    return norm


def _residual_mistakes(x, sublayer, norm, norm_first: bool) -> dict:
    with torch.no_grad():
        return {(HINT_RES_WANT_PRE if norm_first else HINT_RES_WANT_POST):
                _residual_variant(x, sublayer, norm, norm_first, "swapped"),
                HINT_RES_MISSING: _residual_variant(x, sublayer, norm, norm_first, "missing"),
                HINT_RES_NORMED_SKIP: _residual_variant(x, sublayer, norm, norm_first, "normed_skip"),
                HINT_RES_NORM_BRANCH: _residual_variant(x, sublayer, norm, norm_first, "norm_branch"),
                HINT_RES_TWO_NORMS: _residual_variant(x, sublayer, norm, norm_first, "two_norms")}


@check("residual_sublayer")
def check_residual_sublayer(fn):
    """fn(x, sublayer, norm, norm_first): pre-LN x + sublayer(norm(x)); post-LN norm(x + sublayer(x))."""
    C = 8
    sublayer = ReferenceFeedForward(C, 16).eval()
    norm = _random_norm(C)
    cases = [((2, 5, C), 1.0, "a (2, 5, 8) batch"),
             ((1, 3, C), 1.0, "a batch of one"),
             ((2, 1, C), 1.0, "T = 1"),
             ((2, 4, C), 30.0, "large inputs (x * 30)")]
    n = 0
    for norm_first in (True, False):
        style = "pre-LN (norm_first=True)" if norm_first else "post-LN (norm_first=False)"
        for shape, scale, what in cases:
            x = torch.randn(shape) * scale
            out = call(fn, x.clone(), sublayer, norm, norm_first)
            with torch.no_grad():
                expected = _residual_variant(x, sublayer, norm, norm_first)
            expect_close(out, expected, f"{style} on {what}", mistakes=_residual_mistakes(x, sublayer, norm, norm_first))
            n += 1
    # gradients reach x through both paths
    x = torch.randn(2, 3, C)
    for norm_first in (True, False):
        (g,) = grad_of(lambda t: fn(t, sublayer, norm, norm_first), x)
        (g_ref,) = grad_of(lambda t: _residual_variant(t, sublayer, norm, norm_first), x)
        if g is None:
            raise CheckFailed("no gradient reaches x", "avoid .detach() and torch.no_grad().")
        expect_close(g, g_ref, f"gradient with respect to x (norm_first={norm_first})", atol=1e-4)
    return n + 1


# ---------------------------------------------------------------- encoder block
def _block_variant(x, block: EncoderBlock, norm_first: bool, mask, mistake: str = ""):
    """What a typical wrong encoder_block returns, built from the block's own modules."""
    attn, ffn = block.self_attn, block.ffn
    norm1, norm2 = block.attn_sublayer.norm, block.ffn_sublayer.norm
    if mistake == "norms_swapped":
        norm1, norm2 = norm2, norm1
    if mistake == "one_norm":
        norm2 = norm1
    if mistake == "swapped":
        norm_first = not norm_first
    attn_mask = None if mistake == "mask_ignored" else mask

    def attention(h):
        return attn(h, mask=attn_mask)[0]

    steps = [(attention, norm1), (ffn, norm2)]
    if mistake == "ffn_first":
        steps = [(ffn, norm1), (attention, norm2)]
    for sublayer, norm in steps:
        x = x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))
    return x


def _call_block(fn, *args, **kwargs):
    try:
        return call(fn, *args, **kwargs)
    except CheckFailed as e:
        if "tuple" in e.message:
            raise CheckFailed(e.message, HINT_BLOCK_TUPLE) from None
        raise


@check("encoder_block")
def check_encoder_block(fn):
    """fn(x, self_attn, ffn, norm1, norm2, norm_first, mask=None) -> (B, T, C), equal to tfmlib's EncoderBlock."""
    C, H, d_ff = 16, 4, 32
    pad = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])[:, None, None, :]  # (B, 1, 1, T): 3 padded keys
    cases = [((2, 5, C), None, "a (2, 5, 16) batch"),
             ((2, 6, C), pad, "a padded batch (mask)"),
             ((1, 4, C), None, "a batch of one"),
             ((2, 1, C), None, "T = 1")]
    with explain_failure(lambda: probe_helpers(fn, {"residual_sublayer": check_residual_sublayer})):
        return _encoder_block_cases(fn, cases, C, H, d_ff)


def _encoder_block_cases(fn, cases, C, H, d_ff) -> int:
    n = 0
    for norm_first in (True, False):
        style = "pre-LN" if norm_first else "post-LN"
        block = EncoderBlock(C, H, d_ff, dropout=0.0, norm_first=norm_first).eval()
        block.attn_sublayer.norm = _random_norm(C)
        block.ffn_sublayer.norm = _random_norm(C)
        for shape, mask, what in cases:
            x = torch.randn(shape)
            out = _call_block(fn, x.clone(), block.self_attn, block.ffn, block.attn_sublayer.norm,
                              block.ffn_sublayer.norm, norm_first, mask=mask)
            out = expect_tensor(out, f"{style} block on {what}")
            with torch.no_grad():
                expected = block(x, mask=mask)
                wanted = [(HINT_BLOCK_ORDER, "ffn_first"), (HINT_BLOCK_NORMS, "norms_swapped"),
                          (HINT_BLOCK_NORMS, "one_norm"),
                          (HINT_RES_WANT_PRE if norm_first else HINT_RES_WANT_POST, "swapped")]
                if mask is not None:
                    wanted.append((HINT_BLOCK_MASK, "mask_ignored"))
                mistakes = [(hint, _block_variant(x, block, norm_first, mask, m)) for hint, m in wanted]
            _expect_close(out, expected, f"{style} block on {what}", mistakes)
            n += 1
    return n
