"""The losses the lessons train with. Each loss object is called as ``loss_fn(model, batch)``
by ``tfmlib.train.fit`` and returns a scalar tensor.

    label_smoothed_cross_entropy  written out; equals F.cross_entropy(label_smoothing=...)
    token_cross_entropy           its (sum, count) halves, to average over tokens across batches
    LMLoss                        next-token prediction for a decoder-only model
    Seq2SeqLoss                   teacher forcing for an encoder-decoder (shifted-right targets)
    ClassificationLoss            one label per sequence

Shape legend: B batch, T sequence length, V vocabulary (or classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import shift_right

__all__ = ["label_smoothed_cross_entropy", "token_cross_entropy", "LMLoss", "Seq2SeqLoss", "ClassificationLoss"]


def _check_targets(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The keep mask (...) of targets that count; a clear error for a target outside [0, V)."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor (..., V), got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor of class ids, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits (..., V) and targets (...) must agree: got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    keep = targets != ignore_index                                 # (...)
    V = logits.shape[-1]
    if targets.device.type == "cpu" and keep.any():               # range check without a GPU sync
        lo, hi = int(targets[keep].min()), int(targets[keep].max())
        if lo < 0 or hi >= V:
            raise ValueError(f"targets must be class ids in [0, {V - 1}] (or ignore_index={ignore_index}), "
                             f"got ids from {lo} to {hi}")
    return keep


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0,
                        ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the per-target losses, number of targets that count): the two halves of the mean.

    logits (..., V), targets (...). Per target: (1 - eps) * -log p[y] + eps * mean_v(-log p[v]).
    An ignored target contributes exactly 0, whatever its row of logits holds (NaN, inf), so
    sums from several batches add up to the sum over all their tokens at once.
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    keep = _check_targets(logits, targets, ignore_index)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()                                    # half-precision logits: compute in float32
    log_probs = F.log_softmax(logits, dim=-1)                      # (..., V)
    safe_targets = targets.masked_fill(~keep, 0)
    per_token = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (...) -log p[y]
    if smoothing > 0:  # only then: with eps = 0 a logit of -inf elsewhere must not make 0 * inf = NaN
        uniform = -log_probs.mean(dim=-1)                          # (...) mean over the V classes
        per_token = (1.0 - smoothing) * per_token + smoothing * uniform
    per_token = torch.where(keep, per_token, torch.zeros_like(per_token))  # not `* keep`: NaN * 0 = NaN
    return per_token.sum(), keep.sum()


def label_smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy against (1 - eps) one-hot + eps uniform, averaged over non-ignored targets.

    logits (..., V), targets (...). Equals F.cross_entropy(logits, targets, label_smoothing=eps,
    ignore_index=ignore_index) on any valid input: ignored rows holding NaN or -inf change nothing,
    a -inf logit gives inf only when eps > 0 (as in PyTorch), no target counted gives NaN (0 / 0).
    Raises ValueError for shapes that do not agree or a target outside [0, V).
    """
    total, count = token_cross_entropy(logits, targets, smoothing, ignore_index)
    return total / count


def _fused_totals(logits: torch.Tensor, targets: torch.Tensor, smoothing: float, ignore_index: int):
    """token_cross_entropy's (sum, count) from PyTorch's fused kernel: logits (..., V) -> flattened."""
    keep = _check_targets(logits, targets, ignore_index)
    total = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=ignore_index,
                            label_smoothing=smoothing, reduction="sum")
    return total, keep.sum()


class _TokenLoss:
    """A loss that is a mean over tokens. ``loss_fn(model, batch)`` is the mean PyTorch's
    F.cross_entropy computes (what fit trains on); ``loss_fn.totals(model, batch) -> (sum, count)``
    gives its two halves, so that averaging several batches by adding their totals
    (tfmlib.train.evaluate_loss) weighs every token alike and does not depend on the batching."""

    def _logits_targets(self, model: nn.Module, batch):
        raise NotImplementedError

    def _options(self) -> dict:
        return {"ignore_index": getattr(self, "ignore_index", -100), "label_smoothing": self.label_smoothing}

    def totals(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits, targets = self._logits_targets(model, batch)
        options = self._options()
        return _fused_totals(logits, targets, options["label_smoothing"], options["ignore_index"])

    def __call__(self, model: nn.Module, batch) -> torch.Tensor:
        logits, targets = self._logits_targets(model, batch)
        _check_targets(logits, targets, self._options()["ignore_index"])
        return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), **self._options())


@dataclass(frozen=True)
class LMLoss(_TokenLoss):
    """Next-token loss for a decoder-only model: batch (x, y) with y = x shifted left; model(x) -> (B, T, V)."""

    ignore_index: int = -100
    label_smoothing: float = 0.0

    def _logits_targets(self, model: nn.Module, batch):
        return model(batch[0]), batch[1]  # (B, T, V), (B, T)


@dataclass(frozen=True)
class Seq2SeqLoss(_TokenLoss):
    """Teacher forcing: batch (src, tgt) with tgt = y1..yn <eos> <pad>...; the decoder reads
    shift_right(tgt) = <bos> y1..yn and is scored on tgt, ignoring padding."""

    bos_id: int = 1
    pad_id: int = 0
    label_smoothing: float = 0.0

    def _options(self) -> dict:
        return {"ignore_index": self.pad_id, "label_smoothing": self.label_smoothing}

    def _logits_targets(self, model: nn.Module, batch):
        src, tgt = batch[0], batch[1]
        return model(src, shift_right(tgt, self.bos_id)), tgt  # (B, T, V), (B, T)


@dataclass(frozen=True)
class ClassificationLoss(_TokenLoss):
    """batch (x, labels); model(x) -> (B, n_classes). Each sequence is one "token" of the mean."""

    label_smoothing: float = 0.0

    def _logits_targets(self, model: nn.Module, batch):
        return model(batch[0]), batch[1]  # (B, K), (B,)
