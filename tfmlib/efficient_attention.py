"""What attention costs, and three ways to pay less: tiled attention with an online softmax
(flash attention's arithmetic: O(n) extra memory instead of an n x n score matrix), sliding-window
masks (O(n w d) work), and counting FLOPs and the largest tensor a computation creates.

    out = tiled_attention(q, k, v, block=64, is_causal=True)    # == F.scaled_dot_product_attention
    with LargestTensor() as spy:
        tiled_attention(q, k, v)
    spy.numel                                                   # never n * n

Shape legend: B batch, H heads, n_q / n_k query / key length, d head size, w window.
Masks: bool, True = may attend.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["tiled_attention", "sliding_window_mask", "attention_flops", "LargestTensor"]


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = 64,
                    is_causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q (..., n_q, d), k/v (..., n_k, d) -> (..., n_q, d), one block of
    keys at a time, never building the (n_q, n_k) score matrix.

    Per query it keeps a running maximum m, denominator l and weighted sum a; for each key block
    with scores s_j:  m' = max(m, max_j s_j),  l' = e^(m - m') l + sum_j e^(s_j - m'),
    a' = e^(m - m') a + sum_j e^(s_j - m') v_j;  the output is a / l. With is_causal, query i
    (the last n_q of n_k positions) sees keys up to its own position. Equals
    F.scaled_dot_product_attention; raises ValueError for a non-positive block or mismatched shapes.
    """
    if block < 1:
        raise ValueError(f"block must be a positive number of keys, got {block}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q (..., n_q, d), k (..., n_k, d) and v (..., n_k, d_v) do not fit: got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n_q, n_k = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5
    running_max = torch.full(q.shape[:-1] + (1,), float("-inf"), dtype=q.dtype, device=q.device)  # (..., n_q, 1)
    denominator = torch.zeros(q.shape[:-1] + (1,), dtype=q.dtype, device=q.device)               # (..., n_q, 1)
    weighted_sum = torch.zeros(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)    # (..., n_q, d_v)
    query_pos = torch.arange(n_k - n_q, n_k, device=q.device)[:, None]                            # (n_q, 1)
    for start in range(0, n_k, block):
        scores = q @ k[..., start:start + block, :].transpose(-2, -1) * scale      # (..., n_q, block)
        if is_causal:
            key_pos = torch.arange(start, min(start + block, n_k), device=q.device)[None, :]  # (1, block)
            scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
        new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
        safe_max = new_max.masked_fill(new_max == float("-inf"), 0.0)              # a row with no key yet
        correction = torch.exp(running_max - safe_max)                             # rescale the old sums
        exp_scores = torch.exp(scores - safe_max)
        denominator = correction * denominator + exp_scores.sum(-1, keepdim=True)
        weighted_sum = correction * weighted_sum + exp_scores @ v[..., start:start + block, :]
        running_max = new_max
    return weighted_sum / denominator


def sliding_window_mask(n: int, window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, n) bool: query i may attend to keys i - window + 1 .. i (causal, True = may attend).

    Each row has at most ``window`` True entries: attention costs O(n w d) instead of O(n^2 d).
    Raises ValueError unless n >= 1 and window >= 1.
    """
    if n < 1 or window < 1:
        raise ValueError(f"n and window must be at least 1, got n={n}, window={window}")
    i = torch.arange(n, device=device)[:, None]   # (n, 1) query positions
    j = torch.arange(n, device=device)[None, :]   # (1, n) key positions
    return (j <= i) & (j > i - window)


def attention_flops(n: int, d: int, causal: bool = False, window: int | None = None) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of q k^T and weights @ v for one head of n tokens of
    width d: 4 n^2 d in full, 4 d x (number of query-key pairs) with a causal or window mask."""
    if window is not None:
        pairs = sum(min(i + 1, window) for i in range(n))
    elif causal:
        pairs = n * (n + 1) // 2
    else:
        pairs = n * n
    return 4 * pairs * d


class LargestTensor(TorchDispatchMode):
    """Context manager that records ``numel``, the number of elements of the largest tensor any
    PyTorch operation creates inside it (a spy on memory, independent of the machine)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out
