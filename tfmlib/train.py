"""Training: one plain ``fit`` function and the History it returns (losses: tfmlib.losses).

    from tfmlib import Seq2SeqTransformer, TransformerConfig, preset_for_device
    from tfmlib.data import Batches, encode_pairs, make_task
    from tfmlib.train import Seq2SeqLoss, evaluate_loss, fit
    splits = make_task("reverse"); vocab = splits.vocab()
    batches = Batches(*encode_pairs(splits.train, vocab), batch_size=64, seed=0, pad_id=vocab.pad_id)
    val = [encode_pairs(splits.val, vocab)]                  # one batch: (src, tgt)
    cfg = TransformerConfig.preset(preset_for_device(), src_vocab_size=len(vocab), tgt_vocab_size=len(vocab))
    model = Seq2SeqTransformer(cfg)
    loss_fn = Seq2SeqLoss(bos_id=vocab.bos_id, pad_id=vocab.pad_id, label_smoothing=0.1)

    def val_loss(model):                                     # called in eval mode, without gradients
        return {"val_loss": evaluate_loss(model, val, loss_fn)}

    history = fit(model, batches, loss_fn=loss_fn, steps=500, lr=1e-3, schedule="cosine",
                  warmup_steps=50, eval_fn=val_loss, eval_every=100)
    history.loss[-1], history.evals[-1], history.plot()

What fit does each step: take the step's batch, set lr = base lr x schedule(step), compute
``loss_fn(model, batch)`` (on CUDA under bf16 autocast, or fp16 with a GradScaler), backprop,
clip the gradient norm, take an AdamW step (no weight decay on biases and norms).

Stopping: Ctrl-C / "interrupt kernel" finishes the current step, keeps the model and returns
the history with ``history.interrupted`` True. A non-finite loss stops *before* the bad update
(``history.diverged`` True, message printed) or, with ``on_nan="raise"``, raises
NonFiniteLossError (carrying ``.history``). A callback returning True stops too.

Resuming: with ``checkpoint_dir`` fit saves at the end (and every ``checkpoint_every`` steps);
``resume=True`` continues from there. The batches come from ``train_data.batch_at(step)``
(tfmlib.data.Batches) or, for any other iterable, by skipping the batches already used, and
every RNG state is restored, so N steps + save + load + N steps equals 2N steps bit for bit.
``steps`` counts from the start of the run, not of this call.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .losses import (ClassificationLoss, LMLoss, Seq2SeqLoss,  # noqa: F401 - re-exported
                     label_smoothed_cross_entropy)
from .schedules import make_schedule
from .utils import get_device

__all__ = ["fit", "History", "TrainState", "NonFiniteLossError", "label_smoothed_cross_entropy",
           "LMLoss", "Seq2SeqLoss", "ClassificationLoss", "evaluate_loss", "make_optimizer"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; ``.history`` holds everything recorded before."""

    def __init__(self, message: str, history: "History"):
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """What happened during fit: one entry per optimizer step, plus the evaluations."""

    steps: list[int] = field(default_factory=list)   # global step number after each update (1, 2, ...)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    evals: list[dict] = field(default_factory=list)  # {"step": s, metric: value, ...}
    stop_reason: str | None = None  # None (ran to the end), "interrupted", "non-finite loss", "callback"
    seconds: float = 0.0

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"

    @property
    def diverged(self) -> bool:
        return self.stop_reason == "non-finite loss"

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one evaluation metric."""
        pairs = [(e["step"], e[name]) for e in self.evals if name in e]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def smoothed_loss(self, window: int = 20) -> list[float]:
        """Running mean of the loss over the last ``window`` steps."""
        out, total = [], 0.0
        for i, value in enumerate(self.loss):
            total += value - (self.loss[i - window] if i >= window else 0.0)
            out.append(total / min(i + 1, window))
        return out

    def as_dict(self) -> dict:
        return {"steps": self.steps, "loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm,
                "evals": self.evals, "stop_reason": self.stop_reason, "seconds": self.seconds}

    def plot(self, ax=None, metrics: Iterable[str] | None = None, title: str = "training"):
        """Training loss (raw and smoothed) and evaluation metrics against the step."""
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 3.6))
        ax.plot(self.steps, self.loss, alpha=0.3, label="train loss (per step)")
        ax.plot(self.steps, self.smoothed_loss(), label="train loss (running mean)")
        names = metrics if metrics is not None else sorted({k for e in self.evals for k in e} - {"step"})
        for name in names:
            ax.plot(*self.metric(name), marker="o", label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss / metric")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        return ax


@dataclass
class TrainState:
    """What a callback sees after each step; set ``stop = True`` (or return True) to stop."""

    step: int
    loss: float
    lr: float
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    stop: bool = False


def make_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.01,
                   betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps, fused=fused)


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _cycle(data: Iterable, skip: int):
    """Endless batches from a re-iterable (list, DataLoader, ...), skipping the first ``skip``."""
    while True:
        produced = False
        for batch in data:
            produced = True
            if skip:
                skip -= 1
                continue
            yield batch
        if not produced:
            raise ValueError("train_data yielded no batches: pass a list, a DataLoader or "
                             "tfmlib.data.Batches (a generator is used up after one pass)")


class _DeferInterrupt:
    """Turns the first Ctrl-C into a flag checked between steps; a second one interrupts at once."""

    def __init__(self):
        self.requested, self.previous = False, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _autocast(device: torch.device, amp):
    """(context manager, GradScaler or None). Mixed precision only on CUDA."""
    if device.type != "cuda" or not amp:
        return contextlib.nullcontext(), None
    if amp not in (True, "auto", "bf16", "fp16"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or False, got {amp!r}")
    use_bf16 = amp == "bf16" or (amp != "fp16" and torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if use_bf16 else torch.float16
    scaler = None if use_bf16 else torch.amp.GradScaler("cuda")
    return torch.autocast("cuda", dtype=dtype), scaler


def _eval(eval_fn, model: nn.Module, step: int, device: torch.device) -> dict:
    was_training = model.training
    model.eval()
    try:  # the training RNG stream is left untouched, so evaluating never changes training
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            result = eval_fn(model)
    finally:
        model.train(was_training)
    metrics = result if isinstance(result, dict) else {"eval": result}
    return {"step": step, **{k: float(v) for k, v in metrics.items()}}


def fit(model: nn.Module, train_data, *, loss_fn: Callable, steps: int | None = None,
        epochs: int | None = None, lr: float = 1e-3, weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98), schedule=None, warmup_steps: int = 0,
        grad_clip: float | None = 1.0, eval_fn: Callable | None = None, eval_every: int | None = None,
        callbacks: Iterable[Callable] = (), device: torch.device | str | None = None, amp="auto",
        compile: bool = False, optimizer: torch.optim.Optimizer | None = None,
        checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
        resume: bool = False, progress: bool | str = True, live_plot: bool = False,
        plot_every: int | None = None, on_nan: str = "stop") -> History:
    """Train ``model`` in place and return its History (see the module docstring).

    train_data    Batches/LMBatches (batch_at(step)), or any re-iterable of batches (list, DataLoader)
    loss_fn       loss_fn(model, batch) -> scalar tensor, e.g. Seq2SeqLoss(), LMLoss()
    steps/epochs  how long (exactly one); steps counts from the start of the run (resume included)
    lr, weight_decay, betas   AdamW (decay on matrices only); or pass your own ``optimizer``: its
                  groups' lr is the base, kept in group["base_lr"] (the schedule scales group["lr"]), so
                  passing the same optimizer again, or resuming with it or with a fresh one, is exact
    schedule      None/"constant", "warmup", "cosine", "noam", or a callable step -> lr multiplier
                  (tfmlib.schedules); warmup_steps feeds the named ones
    grad_clip     max gradient norm (None: no clipping)
    eval_fn       eval_fn(model) -> {name: value} or a number, run in eval mode without gradients
                  every ``eval_every`` steps and at the end; results in history.evals
    callbacks     cb(TrainState) after every step; returning True (or state.stop = True) stops
    device        default tfmlib.get_device(); amp: "auto" (bf16, else fp16 + GradScaler, CUDA only),
                  "bf16", "fp16" or False; compile=True wraps the model in torch.compile
    checkpoint_dir, checkpoint_every, resume   see tfmlib.checkpoint; exact on the CPU
    progress      tqdm bar with the running loss (a string: the bar's label, e.g. the run's name);
                  live_plot redraws a loss figure (Jupyter)
    on_nan        "stop" (history.diverged) or "raise" (NonFiniteLossError)
    """
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    if epochs is not None:
        if not hasattr(train_data, "__len__"):
            raise TypeError("epochs= needs train_data with a length; give steps= instead")
        steps = epochs * len(train_data)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if on_nan not in ("stop", "raise"):
        raise ValueError(f"on_nan must be 'stop' or 'raise', got {on_nan!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
    schedule = schedule if callable(schedule) else make_schedule(schedule, warmup_steps, steps)
    device = get_device() if device is None else torch.device(device)
    model.to(device)
    optimizer = optimizer or make_optimizer(model, lr, weight_decay, betas)
    for group in optimizer.param_groups:  # the unscaled lr, stored once: never read back a scaled "lr"
        group.setdefault("base_lr", group["lr"])
    fallback_base_lrs = [group["base_lr"] for group in optimizer.param_groups]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    foreach = device.type in ("cpu", "cuda")  # one fused call for the gradient norm
    autocast, scaler = _autocast(device, amp)
    forward_model = torch.compile(model) if compile else model

    history, step = History(), 0
    if resume and has_checkpoint(checkpoint_dir):
        state = load_checkpoint(checkpoint_dir, model, optimizer, scaler=scaler)
        step = state["step"]
        history = History(**state["extra"].get("history", {}))
        history.stop_reason = None
        for group, base in zip(optimizer.param_groups, fallback_base_lrs):
            group.setdefault("base_lr", base)  # a checkpoint written before base_lr was saved
    base_lrs = [group["base_lr"] for group in optimizer.param_groups]
    next_batch = train_data.batch_at if hasattr(train_data, "batch_at") else None
    stream = None if next_batch else _cycle(train_data, skip=step)

    def save():
        save_checkpoint(checkpoint_dir, model, optimizer, step=step, scaler=scaler,
                        extra={"history": history.as_dict()})

    callbacks = list(callbacks)
    plot = _LivePlot(plot_every or max(1, steps // 50)) if live_plot else None
    bar = tqdm(total=steps, initial=step, disable=not progress, unit="step",
               desc=progress if isinstance(progress, str) else "training")
    model.train()
    start_time = time.perf_counter()
    interrupt = _DeferInterrupt()
    try:
        with interrupt:
            while step < steps:
                batch = next_batch(step) if next_batch else next(stream)
                batch = _to_device(batch, device)
                multiplier = schedule(step)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * multiplier
                with autocast:
                    loss = loss_fn(forward_model, batch)
                (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.unscale_(optimizer)
                if grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=foreach)
                    loss_value, norm_value = torch.stack([loss.detach().float(), norm.float()]).tolist()
                else:
                    loss_value, norm_value = loss.item(), float("nan")
                if not math.isfinite(loss_value):
                    optimizer.zero_grad(set_to_none=True)
                    history.stop_reason = "non-finite loss"
                    message = (f"fit stopped: the loss is {loss_value} at step {step + 1} "
                               f"(lr {base_lrs[0] * multiplier:.3g}). The weights are those after step {step}, "
                               "before the bad update. Try a smaller lr, a warm-up, or grad_clip.")
                    if on_nan == "raise":
                        raise NonFiniteLossError(message, history)
                    print(message)
                    break
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                lr_now = base_lrs[0] * multiplier
                history.steps.append(step)
                history.loss.append(loss_value)
                history.lr.append(lr_now)
                history.grad_norm.append(norm_value)
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix_str(f"loss {sum(history.loss[-10:]) / len(history.loss[-10:]):.4f}",
                                        refresh=False)
                if eval_fn is not None and eval_every and step % eval_every == 0:
                    history.evals.append(_eval(eval_fn, model, step, device))
                if callbacks:
                    state = TrainState(step, loss_value, lr_now, model, optimizer, history)
                    if any([bool(cb(state)) for cb in callbacks]) or state.stop:
                        history.stop_reason = "callback"
                if plot is not None and (step % plot.every == 0 or step == steps):
                    plot.update(history)
                if checkpoint_dir is not None and checkpoint_every and step % checkpoint_every == 0:
                    save()
                if interrupt.requested:
                    raise KeyboardInterrupt
                if history.stop_reason:
                    break
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
        optimizer.zero_grad(set_to_none=True)  # a hard (second) Ctrl-C may land mid-step
        print(f"fit interrupted after step {step}: the model keeps its weights; "
              "the history is returned (history.interrupted is True).")
    finally:
        bar.close()
        history.seconds += time.perf_counter() - start_time
    if checkpoint_dir is not None and not history.diverged:
        save()  # before the final evaluation: a resumed run must not depend on it
    if eval_fn is not None and not history.interrupted and not history.diverged and \
            (not history.evals or history.evals[-1]["step"] != step):
        history.evals.append(_eval(eval_fn, model, step, device))
    if plot is not None:
        plot.update(history)
    return history


class _LivePlot:
    """Redraws the loss curve in place in Jupyter (only when fit(live_plot=True))."""

    def __init__(self, every: int):
        import matplotlib.pyplot as plt
        from IPython.display import display
        self.every, self.plt = every, plt
        self.fig, self.ax = plt.subplots(figsize=(6.5, 3.6))
        plt.close(self.fig)  # shown through the display handle only
        self.handle = display(self.fig, display_id=True)

    def update(self, history: History) -> None:
        self.ax.clear()
        history.plot(ax=self.ax, title="training (live)")
        self.handle.update(self.fig)


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: Iterable, loss_fn: Callable, device=None,
                  max_batches: int | None = None) -> float:
    """The loss over the batches of ``data`` (one pass), in eval mode, without gradients.

    With a loss that has ``totals(model, batch) -> (sum, count)`` (LMLoss, Seq2SeqLoss,
    ClassificationLoss) this is the mean over every token of every batch: the same number
    however the data is cut into batches. Any other ``loss_fn(model, batch)`` returns a batch
    mean; those are weighted by the batch's number of rows (len(batch[0])).
    """
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    total, count, n_batches = 0.0, 0, 0
    try:
        batches = (data.batch_at(i) for i in range(len(data))) if hasattr(data, "batch_at") else data
        for batch in batches:
            if max_batches is not None and n_batches >= max_batches:
                break
            batch = _to_device(batch, device)
            if hasattr(loss_fn, "totals"):
                batch_total, batch_count = loss_fn.totals(model, batch)
                total, count = total + float(batch_total), count + int(batch_count)
            else:
                rows = len(batch[0]) if isinstance(batch, (tuple, list)) else 1
                total, count = total + float(loss_fn(model, batch)) * rows, count + rows
            n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("evaluate_loss got no batches")
    return total / count if count else float("nan")
