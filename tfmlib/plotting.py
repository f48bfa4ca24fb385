"""Figures the lessons share: attention heatmaps (one map or a grid of heads) and
line plots of a measured quantity. Every figure labels its axes.

Sizes fit a notebook column: JupyterLab shows an output about 850 px wide in a common window, and the
inline backend draws 100 px per inch, so no figure is wider than COLUMN_WIDTH (8.4 in). Lessons that
build their own figures use ``figsize=(COLUMN_WIDTH, height)`` or narrower (tests check every committed
figure's width).

Shape legend: H heads, T_q queries (rows), T_k keys (columns).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

__all__ = ["COLUMN_WIDTH", "plot_attention", "plot_heads", "plot_curves"]

COLUMN_WIDTH = 8.4  # inches: 840 px at the inline backend's 100 dpi, the width of a notebook column


def _as_2d(weights) -> "torch.Tensor":
    w = torch.as_tensor(weights).detach().float().cpu()
    while w.dim() > 2 and w.shape[0] == 1:
        w = w[0]
    if w.dim() != 2:
        raise ValueError(f"expected one attention map (T_q, T_k), got shape {tuple(w.shape)}")
    return w


def plot_attention(weights, queries: Sequence[str] | None = None, keys: Sequence[str] | None = None,
                   ax=None, title: str = "attention weights", annotate: bool | None = None, cmap: str = "viridis"):
    """Heatmap of one map (T_q, T_k): row i shows how query i spreads its attention over the keys."""
    w = _as_2d(weights)
    T_q, T_k = w.shape
    if ax is None:
        width = min(COLUMN_WIDTH, 1.0 + 0.55 * T_k)
        _, ax = plt.subplots(figsize=(width, min(COLUMN_WIDTH, 0.8 + 0.5 * T_q * width / (1.0 + 0.55 * T_k))))
    im = ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=max(1e-9, float(w.max())))
    ax.set_xticks(range(T_k), labels=list(keys) if keys is not None else range(T_k), rotation=45 if keys else 0)
    ax.set_yticks(range(T_q), labels=list(queries) if queries is not None else range(T_q))
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position (attending)")
    ax.set_title(title)
    if annotate if annotate is not None else (T_q * T_k <= 64):
        for i in range(T_q):
            for j in range(T_k):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if w[i, j] < 0.6 * w.max() else "black")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax


def plot_heads(weights, queries: Sequence[str] | None = None, keys: Sequence[str] | None = None,
               title: str = "attention per head", cols: int = 4):
    """Grid of per-head maps from weights (H, T_q, T_k) or (1, H, T_q, T_k)."""
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() == 4 and w.shape[0] == 1:
        w = w[0]
    if w.dim() != 3:
        raise ValueError(f"expected per-head weights (H, T_q, T_k), got shape {tuple(w.shape)}")
    H = w.shape[0]
    cols = min(cols, H)
    rows = (H + cols - 1) // cols
    panel = min(3.2, COLUMN_WIDTH / cols)  # square-ish panels, the whole grid within a notebook column
    # each row: a square map as wide as its panel, plus its title and tick labels
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols, (panel + 0.4) * rows + 0.3), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        ax.imshow(w[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h}")
        if h + cols >= H:           # the lowest panel of its column labels the shared x axis
            ax.set_xlabel("key position")
        if h % cols == 0:           # the first panel of its row labels the shared y axis
            ax.set_ylabel("query position")
        if keys is not None:
            ax.set_xticks(range(len(keys)), labels=list(keys), rotation=90, fontsize=7)
        if queries is not None:
            ax.set_yticks(range(len(queries)), labels=list(queries), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(w_pad=0.4)
    return fig


def plot_curves(x, curves: dict, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
                logy: bool = False, ax=None, marker: str = "o"):
    """One line per entry of ``curves`` ({label: y values}) against x."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for label, y in curves.items():
        ax.plot(x, y, marker=marker, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return ax
