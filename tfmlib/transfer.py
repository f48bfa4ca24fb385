"""Transfer with few labels: a small head on a frozen pretrained encoder's features, the same
architecture trained from scratch, and accuracy against the number of labelled examples.

    idx = balanced_subset(train_labels, n_per_class=4, seed=0)      # 4 examples of every class
    head = train_head(features[idx], train_labels[idx], n_classes=5)  # logistic regression (C -> K)
    accuracy(head(test_features), test_labels)

    (train_ids, test_ids), kept = compact_vocabulary(train_ids, test_ids)  # rows a model from scratch needs
    model = EncoderClassifier(bert_config(hf, vocab_size=len(kept), n_classes=5))
    history = train_classifier(model, train_ids[idx], train_labels[idx], steps=50, lr=1e-3)

    curves = few_shot_curve(run, train_labels, counts=[1, 2, 4], seeds=[0, 1])  # {name: (counts, seeds)}

A frozen encoder plus a linear head is *linear probing*: the encoder computes features x (N, C) once,
and only W (K, C), b (K) are trained, by cross-entropy. Fine-tuning trains the encoder too.

Shape legend: N examples, T tokens, C feature size (d_model), K classes.
"""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .data import Batches
from .losses import ClassificationLoss
from .train import fit
from .utils import check_tensor

__all__ = ["balanced_subset", "accuracy", "train_head", "compact_vocabulary", "train_classifier",
           "few_shot_curve"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def balanced_subset(labels: torch.Tensor, n_per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices (n_per_class * K,) of ``n_per_class`` examples of each class, drawn without replacement
    by ``seed``; labels (N,) integers in [0, K). The same seed gives the same draw on every machine.
    Raises ValueError if a class has fewer than ``n_per_class`` examples."""
    check_tensor(labels, "labels", ndim=1, dtype_kind="int")
    _positive_int(n_per_class, "n_per_class")
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    picked = []
    for k in range(int(labels.max()) + 1):
        members = (labels == k).nonzero().squeeze(1)        # (N_k,)
        if len(members) < n_per_class:
            raise ValueError(f"class {k} has {len(members)} examples, fewer than n_per_class={n_per_class}")
        picked.append(members[torch.randperm(len(members), generator=generator)[:n_per_class]])
    return torch.cat(picked)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose largest logit is the label: logits (N, K), labels (N,).

    Raises TypeError when logits is not a float tensor or labels not an integer tensor, ValueError
    when logits is not 2-D, labels not 1-D, their N differ, or N = 0 (no accuracy to measure)."""
    check_tensor(logits, "logits", ndim=2, dtype_kind="float")
    check_tensor(labels, "labels", ndim=1, dtype_kind="int")
    if len(logits) != len(labels):
        raise ValueError(f"logits has {len(logits)} rows but labels {len(labels)}")
    if len(labels) == 0:
        raise ValueError("accuracy of no examples: logits (0, K) and labels (0,) are empty")
    return (logits.argmax(-1) == labels.to(logits.device)).float().mean().item()


def train_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int, steps: int = 50,
               lr: float = 3e-2, weight_decay: float = 0.0, seed: int = 0) -> nn.Linear:
    """A linear head (C -> K) fitted by full-batch AdamW on cross-entropy: logistic regression on
    fixed features (N, C) with labels (N,). Returns the nn.Linear, in eval mode, on the features' device."""
    check_tensor(features, "features", ndim=2, dtype_kind="float")
    check_tensor(labels, "labels", ndim=1, dtype_kind="int")
    if len(features) != len(labels):
        raise ValueError(f"features has {len(features)} rows but labels {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(features.shape[1], _positive_int(n_classes, "n_classes"))
    with torch.no_grad():                                  # PyTorch's default init, from our own generator
        bound = features.shape[1] ** -0.5
        head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
        head.bias.zero_()
    head.to(features.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay,
                                  fused=features.device.type in ("cpu", "cuda"))
    labels = labels.to(features.device)
    with torch.enable_grad():
        for _ in range(_positive_int(steps, "steps")):
            loss = nn.functional.cross_entropy(head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.eval()


def compact_vocabulary(*ids: torch.Tensor, pad_id: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Renumber token ids so that only the ids that occur (and ``pad_id``) remain: returns the
    renumbered tensors (same shapes) and ``kept`` (V',), the old id of each new id, ascending.

    A model trained from scratch is unchanged by this: an embedding row of a token that no input
    contains gets no gradient and is never read, so dropping it changes nothing but the cost of
    updating a (V, C) table. ``pad_id`` (the smallest id, as BERT's 0) keeps its number."""
    for i, t in enumerate(ids):
        check_tensor(t, f"ids[{i}]", dtype_kind="int")
    kept = torch.unique(torch.cat([t.flatten().cpu() for t in ids] + [torch.tensor([pad_id])]))  # sorted
    if int(kept[0]) < 0:
        raise ValueError(f"token ids and pad_id must be non-negative, got {int(kept[0])}")
    new_id = torch.full((int(kept.max()) + 1,), -1, dtype=torch.long)
    new_id[kept] = torch.arange(len(kept))                 # old id -> new id
    if int(new_id[pad_id]) != pad_id:
        raise ValueError(f"pad_id={pad_id} must be the smallest id to keep its number; ids start at {int(kept[0])}")
    return [new_id[t.cpu()].to(t.device) for t in ids], kept


def train_classifier(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, *, steps: int = 50,
                     lr: float = 1e-4, batch_size: int = 40, seed: int = 0, pad_id: int = 0,
                     device: torch.device | str | None = None, **fit_options):
    """Train a whole classifier (model(ids (B, T)) -> logits (B, K)) for ``steps`` AdamW steps with
    tfmlib.train.fit, on mini-batches of ``batch_size`` from tfmlib.data.Batches (seeded, padding
    columns trimmed); ``fit_options`` go to fit (e.g. schedule, warmup_steps, weight_decay).

    Returns fit's History; ``history.evals[-1]["train_accuracy"]`` is the accuracy on all of
    ``ids`` at the end (eval mode)."""
    check_tensor(ids, "ids", ndim=2, dtype_kind="int")
    check_tensor(labels, "labels", ndim=1, dtype_kind="int")
    if len(ids) != len(labels):
        raise ValueError(f"ids has {len(ids)} rows but labels {len(labels)}")
    _positive_int(steps, "steps")
    batches = Batches(ids, labels, batch_size=_positive_int(batch_size, "batch_size"), seed=seed, pad_id=pad_id)

    def train_accuracy(model):                             # fit runs it in eval mode, without gradients
        return {"train_accuracy": accuracy(model(ids.to(next(model.parameters()).device)), labels)}

    torch.manual_seed(seed)                                # dropout, if the config has any
    with torch.enable_grad():                              # also in a notebook that switched gradients off
        return fit(model, batches, loss_fn=ClassificationLoss(), steps=steps, lr=lr, eval_fn=train_accuracy,
                   progress=False, device=device, **fit_options)


def few_shot_curve(run: Callable[[torch.Tensor, int], dict], labels: torch.Tensor, counts: Sequence[int],
                   seeds: Sequence[int] = (0,)) -> dict[str, torch.Tensor]:
    """Call ``run(indices, seed)`` for each count and seed, with ``indices`` = balanced_subset(labels,
    count, seed); ``run`` trains on those examples and returns {name: accuracy}. Returns
    {name: tensor (len(counts), len(seeds))} of the accuracies.

    Raises TypeError when labels is not a 1-D integer tensor, counts or seeds is not a list of ints
    (a lone int: write [4]), run does not return a dict, or an accuracy is not a single number;
    ValueError when counts or seeds is empty, labels is not 1-D, or a class has fewer examples than
    a count (balanced_subset)."""
    check_tensor(labels, "labels", ndim=1, dtype_kind="int")
    for name, values in (("counts", counts), ("seeds", seeds)):
        if isinstance(values, (int, str)) or not isinstance(values, Sequence):
            raise TypeError(f"{name} must be a list of ints, got {type(values).__name__} {values!r:.30}"
                            + (f": write {name}=[{values}]" if isinstance(values, int) else ""))
    if not counts or not seeds:
        raise ValueError("few_shot_curve needs at least one count and one seed")
    results: dict[str, torch.Tensor] = {}
    for i, count in enumerate(counts):
        for j, seed in enumerate(seeds):
            scores = run(balanced_subset(labels, count, seed), seed)
            if not isinstance(scores, dict):
                raise TypeError(f"run must return a dict {{name: accuracy}}, got {type(scores).__name__}")
            for name, value in scores.items():
                if not (isinstance(value, numbers.Real) or isinstance(value, torch.Tensor) and value.numel() == 1):
                    given = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                    raise TypeError(f"run must return one number per name, got {name!r}: {given} (accuracy(logits, "
                                    "labels) returns one float)")
                results.setdefault(name, torch.full((len(counts), len(seeds)), float("nan")))[i, j] = float(value)
    return results
