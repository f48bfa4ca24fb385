"""The losses the lessons train with. Each loss object is called as ``loss_fn(model, batch)``
by ``tfmlib.train.fit`` and returns a scalar tensor.

    label_smoothed_cross_entropy  written out; equals F.cross_entropy(label_smoothing=...)
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

__all__ = ["label_smoothed_cross_entropy", "LMLoss", "Seq2SeqLoss", "ClassificationLoss"]


def label_smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy against (1 - eps) one-hot + eps uniform, averaged over non-ignored targets.

    logits (..., V), targets (...). Per target: (1 - eps) * -log p[y] + eps * mean_v(-log p[v]).
    Equals F.cross_entropy(logits, targets, label_smoothing=eps, ignore_index=ignore_index).
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits (..., V) and targets (...) must agree: got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    log_probs = F.log_softmax(logits.float(), dim=-1)             # (..., V)
    keep = targets != ignore_index                                 # (...)
    safe_targets = targets.masked_fill(~keep, 0)
    nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (...) -log p[y]
    uniform = -log_probs.mean(dim=-1)                              # (...) mean over the V classes
    per_token = (1.0 - smoothing) * nll + smoothing * uniform
    return (per_token * keep).sum() / keep.sum()


@dataclass(frozen=True)
class LMLoss:
    """Next-token loss for a decoder-only model: batch (x, y) with y = x shifted left; model(x) -> (B, T, V)."""

    ignore_index: int = -100
    label_smoothing: float = 0.0

    def __call__(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = model(x)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


@dataclass(frozen=True)
class Seq2SeqLoss:
    """Teacher forcing: batch (src, tgt) with tgt = y1..yn <eos> <pad>...; the decoder reads
    shift_right(tgt) = <bos> y1..yn and is scored on tgt, ignoring padding."""

    bos_id: int = 1
    pad_id: int = 0
    label_smoothing: float = 0.0

    def __call__(self, model: nn.Module, batch) -> torch.Tensor:
        src, tgt = batch[0], batch[1]
        logits = model(src, shift_right(tgt, self.bos_id))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=self.pad_id,
                               label_smoothing=self.label_smoothing)


@dataclass(frozen=True)
class ClassificationLoss:
    """batch (x, labels); model(x) -> (B, n_classes)."""

    label_smoothing: float = 0.0

    def __call__(self, model: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), batch[1], label_smoothing=self.label_smoothing)
