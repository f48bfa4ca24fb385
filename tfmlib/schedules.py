"""Learning-rate schedules: small frozen dataclasses you call with the step number.

A schedule returns a *multiplier* of the base learning rate for optimizer step
``step`` (0 is the first update), so one schedule works with any base lr:

    sched = WarmupCosine(warmup_steps=100, total_steps=1000)
    sched(0), sched(99), sched(999)      # 0.01, 1.0, ~0.0
    fit(model, data, loss_fn=..., steps=1000, lr=3e-4, schedule=sched)   # tfmlib.train
    scheduler = as_lambda_lr(optimizer, sched)   # or as a torch LambdaLR, if you prefer

    Constant()                          1 at every step
    LinearWarmup(w)                     rises linearly to 1 over w steps, then stays at 1
    WarmupCosine(w, total, min_ratio)   warm-up, then half a cosine down to min_ratio at ``total``
    WarmupInverseSqrt(w)                warm-up, then 1/sqrt(step) decay ("Noam", the 2017 paper)

The 2017 paper's absolute learning rate is ``noam_lr(step, d_model, warmup_steps)``:
    lr = d_model^-0.5 * min(s^-0.5, s * warmup^-1.5),  with s = step + 1
which equals ``d_model^-0.5 * warmup^-0.5 * WarmupInverseSqrt(warmup)(step)``.

Schedules are plain data (no lambdas): they print, compare, pickle and can be
rebuilt from the step counter alone, which makes resuming a run exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Constant", "LinearWarmup", "WarmupCosine", "WarmupInverseSqrt", "noam_lr",
           "make_schedule", "as_lambda_lr"]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Constant:
    """The base learning rate at every step."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class LinearWarmup:
    """(step + 1) / warmup_steps during the warm-up, then 1."""

    warmup_steps: int

    def __post_init__(self):
        _check_int("warmup_steps", self.warmup_steps, 0)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 1.0


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up, then cosine decay from 1 to ``min_ratio`` at ``total_steps`` (and after)."""

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0

    def __post_init__(self):
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("total_steps", self.total_steps, 1)
        if self.total_steps < self.warmup_steps:
            raise ValueError(f"total_steps ({self.total_steps}) must be >= warmup_steps ({self.warmup_steps})")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in [0, 1], got {self.min_ratio}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupInverseSqrt:
    """min(s / warmup, sqrt(warmup / s)) with s = step + 1: peaks at 1 when s = warmup ("Noam")."""

    warmup_steps: int

    def __post_init__(self):
        _check_int("warmup_steps", self.warmup_steps, 1)

    def __call__(self, step: int) -> float:
        s = step + 1
        return min(s / self.warmup_steps, math.sqrt(self.warmup_steps / s))


def noam_lr(step: int, d_model: int, warmup_steps: int = 4000) -> float:
    """The absolute learning rate of "Attention Is All You Need" (eq. 3) at optimizer step ``step`` (0-based)."""
    _check_int("d_model", d_model, 1)
    _check_int("warmup_steps", warmup_steps, 1)
    s = step + 1
    return d_model ** -0.5 * min(s ** -0.5, s * warmup_steps ** -1.5)


def make_schedule(name: str | None, warmup_steps: int = 0, total_steps: int | None = None):
    """Build a schedule by name: None/"constant", "warmup", "cosine" or "noam" (alias "inverse_sqrt")."""
    if name is None or name == "constant":
        return LinearWarmup(warmup_steps) if warmup_steps else Constant()
    if name == "warmup":
        return LinearWarmup(warmup_steps)
    if name == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps")
        return WarmupCosine(warmup_steps, total_steps)
    if name in ("noam", "inverse_sqrt"):
        return WarmupInverseSqrt(max(1, warmup_steps))
    raise ValueError(f"unknown schedule {name!r}; choose 'constant', 'warmup', 'cosine' or 'noam', "
                     "or pass a callable step -> multiplier such as WarmupCosine(100, 1000)")


def as_lambda_lr(optimizer: torch.optim.Optimizer, schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A torch LambdaLR driven by ``schedule`` (call ``scheduler.step()`` after each ``optimizer.step()``)."""
    if not callable(schedule):
        raise TypeError(f"schedule must be callable step -> multiplier, got {type(schedule).__name__}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
