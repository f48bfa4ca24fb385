"""Checks for lesson 14's exercises (scaling up): the parameter count of a GPT-2-style config, the
bytes AdamW training holds per parameter, the per-token loss over micro-batches (gradient
accumulation, data parallelism), and MFU. Each runs the learner's code against tfmlib's reference
(``tfmlib.scaling``) and names the usual mistake when the output matches it.

Shape legend: K micro-batches (or processes).
"""
from __future__ import annotations

import torch

from ..config import GPTConfig
from ..scaling import gpt_param_count
from .core import CheckFailed, call, check, expect_close

__all__ = ["check_param_count", "check_training_bytes", "check_step_loss", "check_mfu",
           "HINT_NO_BIASES", "HINT_NO_POSITIONS", "HINT_HEAD_TWICE", "HINT_NO_NORMS", "HINT_FFN_4C",
           "HINT_NO_GRADS", "HINT_ONE_MOMENT", "HINT_BF16_MASTER", "HINT_NOT_A_NUMBER",
           "HINT_MEAN_OF_MEANS", "HINT_SUM_NOT_MEAN", "HINT_FORWARD_ONLY", "HINT_NO_DEVICES", "HINT_PERCENT"]

HINT_NO_BIASES = ("count the biases too: each Linear has one per output feature (q, k, v, out: 4C; the FFN: F + C) "
                  "when config.bias is True.")
HINT_NO_POSITIONS = "the learned position table has max_len x C parameters (positional='learned')."
HINT_HEAD_TWICE = "with tie_weights=True the output head IS the token embedding: count V x C once, not twice."
HINT_NO_NORMS = ("count the norms: two LayerNorms per block and one at the end, each with a weight and a bias "
                 "(2C parameters).")
HINT_FFN_4C = "the FFN width is config.d_ff, not always 4 x d_model."
HINT_NO_GRADS = ("a gradient per parameter (4 bytes in float32) lives next to the weight during the step: "
                 "weights 4 + gradients 4 + AdamW's two moments 8 = 16 bytes.")
HINT_ONE_MOMENT = "AdamW keeps TWO float32 numbers per parameter (first and second moment, m and v): 8 bytes."
HINT_BF16_MASTER = ("mixed precision keeps the master weights, gradients and moments in float32; only the "
                    "activations (and the matrix products) run in bf16.")
HINT_NOT_A_NUMBER = "return one number (an int, a float, or a 0-d tensor)."
HINT_MEAN_OF_MEANS = ("that is the mean of the micro-batch means: each token must weigh the same. Add the sums "
                      "and divide by the total number of tokens: sum(sums) / sum(counts).")
HINT_SUM_NOT_MEAN = "divide the summed loss by the total number of tokens (the loss is a mean per token)."
HINT_FORWARD_ONLY = ("a training step costs ~6 N FLOPs per token (forward 2 N, backward 4 N), not 2 N: "
                     "you counted the forward pass only.")
HINT_NO_DEVICES = "the peak is per device: divide by peak x n_devices."
HINT_PERCENT = "return a fraction between 0 and 1 (0.4), not a percentage (40)."


def _as_number(out, what: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return out.detach().double().reshape(())
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return torch.tensor(float(out), dtype=torch.float64)
    raise CheckFailed(f"{what}: expected one number, got {type(out).__name__}", HINT_NOT_A_NUMBER)


def _number(x) -> torch.Tensor:
    return torch.tensor(float(x), dtype=torch.float64)


@check("param_count")
def check_param_count(fn):
    """fn(config: GPTConfig) -> trainable parameters of a GPT-2-style model (LayerNorm, MLP, learned positions)."""
    configs = [("the cpu preset", GPTConfig.preset("cpu")),
               ("an untied head", GPTConfig.preset("cpu", tie_weights=False, vocab_size=100)),
               ("d_ff = 3 x d_model", GPTConfig.preset("tiny", d_ff=96, n_layers=3)),
               ("no biases", GPTConfig.preset("cpu", bias=False)),
               ("gpt-100m", GPTConfig.preset("gpt-100m"))]
    for what, cfg in configs:
        C, F, V, L = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_layers
        expected = gpt_param_count(cfg)
        biases = L * (4 * C + F + C) if cfg.bias else 0
        mistakes = {HINT_NO_BIASES: expected - biases, HINT_NO_POSITIONS: expected - cfg.max_len * C,
                    HINT_NO_NORMS: expected - (2 * L + 1) * 2 * C, HINT_FFN_4C: expected + L * 2 * C * (4 * C - F)
                    + (L * (4 * C - F) if cfg.bias else 0)}
        if cfg.tie_weights:
            mistakes[HINT_HEAD_TWICE] = expected + V * C
        out = _as_number(call(fn, cfg), f"param_count on {what}")
        expect_close(out, _number(expected), f"param_count on {what}", atol=0.5, rtol=0,
                     mistakes={h: _number(w) for h, w in mistakes.items() if w != expected})
    return len(configs)


@check("training_bytes")
def check_training_bytes(fn):
    """fn(n_params) -> bytes of weights + gradients + AdamW moments, all float32 (mixed precision too)."""
    for n in (1, 124_000_000, 7_000_000_000):
        out = _as_number(call(fn, n), f"training_bytes({n:,})")
        expect_close(out, _number(16 * n), f"training_bytes({n:,})", atol=0.5, rtol=0,
                     mistakes={HINT_NO_GRADS: _number(12 * n), HINT_ONE_MOMENT: _number(12 * n),
                               HINT_BF16_MASTER: _number(8 * n)})
    return 3


@check("step_loss")
def check_step_loss(fn):
    """fn(sums (K,), counts (K,)) -> the step's loss per token from K micro-batches' (sum, token count)."""
    cases = [("equal micro-batches", torch.tensor([12.0, 10.0]), torch.tensor([4, 4])),
             ("uneven token counts", torch.tensor([3.0, 40.0, 21.0]), torch.tensor([1, 20, 7])),
             ("one micro-batch", torch.tensor([9.0]), torch.tensor([3]))]
    for what, sums, counts in cases:
        expected = sums.double().sum() / counts.double().sum()
        out = _as_number(call(fn, sums.clone(), counts.clone()), f"step_loss on {what}")
        mistakes = {HINT_MEAN_OF_MEANS: (sums.double() / counts.double()).mean(), HINT_SUM_NOT_MEAN: sums.double().sum()}
        if what == "equal micro-batches":
            mistakes.pop(HINT_MEAN_OF_MEANS)
        expect_close(out, expected, f"step_loss on {what}", atol=1e-6, rtol=1e-6, mistakes=mistakes)
    return len(cases)


@check("mfu")
def check_mfu(fn):
    """fn(tokens_per_s, n_params, peak_flops, n_devices) -> 6 N x tokens/s / (peak x n_devices), a fraction."""
    cases = [(40_000.0, 1e6, 1e12, 1), (150_000.0, 110e6, 989e12, 1), (1.2e6, 110e6, 989e12, 8)]
    for tokens_per_s, n, peak, devices in cases:
        what = f"mfu({tokens_per_s:,.0f} tokens/s, N={n:,.0f}, peak={peak:.3g}, {devices} device(s))"
        expected = 6 * n * tokens_per_s / (peak * devices)
        out = _as_number(call(fn, tokens_per_s, n, peak, devices), what)
        mistakes = {HINT_FORWARD_ONLY: _number(expected / 3), HINT_PERCENT: _number(100 * expected)}
        if devices > 1:
            mistakes[HINT_NO_DEVICES] = _number(expected * devices)
        expect_close(out, _number(expected), what, atol=1e-12, rtol=1e-9, mistakes=mistakes)
    return len(cases)
