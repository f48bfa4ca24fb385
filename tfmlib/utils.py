"""Small helpers every lesson needs: device choice, seeding, counting, input checks.

Shape legend used throughout tfmlib:
    B  batch size             T   sequence length (T_q queries, T_k keys)
    C  model width (d_model)  H   attention heads (H_kv key/value heads)
    hs head size (C // H)     V   vocabulary size
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "set_seed", "count_parameters", "check_tensor", "describe_device",
           "configure_threads"]

# Why tfmlib chooses the CPU thread count (see configure_threads): the course's models are small, so a
# second thread buys little, while a kernel that uses every core fights the browser, the other kernels
# and the tests for them (OpenMP threads spin while they wait), which on a busy 2-core laptop made a
# lesson 5-10x slower.
MAX_DEFAULT_THREADS = 4


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` ("cpu", "cuda", "mps") forces a choice; the environment variable
    ``TFM_DEVICE`` does the same, so CI or a learner can pin the CPU.
    """
    choice = prefer or os.environ.get("TFM_DEVICE")
    if choice:
        if choice not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {choice!r}")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def configure_threads(threads: int | None = None) -> int:
    """Set how many CPU threads PyTorch uses for one operation, and return the number in force.

    Called once when tfmlib is imported, so every lesson runs with the same rule:
      1. ``threads`` if given (a learner's explicit choice; ``tfmlib.configure_threads(4)``);
      2. else the environment variable ``TFM_THREADS`` (e.g. ``TFM_THREADS=2 make lab``);
      3. else, when ``OMP_NUM_THREADS`` is set, PyTorch's choice, which follows it (the test suite);
      4. else half of PyTorch's default (its count of physical cores), at least 1 and at most
         ``MAX_DEFAULT_THREADS``: 1 on a 2-core laptop, 4 on an 8-core one.
    Raises ValueError for a count below 1 or a ``TFM_THREADS`` that is not a whole number.
    """
    if threads is None:
        env = os.environ.get("TFM_THREADS")
        if env is not None:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"TFM_THREADS must be a whole number of threads, got {env!r}") from None
        elif os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        else:
            threads = min(MAX_DEFAULT_THREADS, max(1, torch.get_num_threads() // 2))
    if threads < 1:
        raise ValueError(f"the number of threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def describe_device(device: torch.device | None = None) -> str:
    """One line naming the device, e.g. 'cpu (1 thread; set TFM_THREADS to change)' or 'cuda: NVIDIA H100'."""
    device = device or get_device()
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'}; set TFM_THREADS to change)"


def set_seed(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices). Returns a torch.Generator seeded alike."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; tied weights are counted once."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def check_tensor(x, name: str, ndim: int | tuple[int, ...] | None = None,
                 last_dim: int | None = None, dtype_kind: str | None = None) -> None:
    """Raise a clear TypeError/ValueError when ``x`` is not the tensor we expect.

    ndim: the number of dimensions allowed (an int or a tuple of ints).
    last_dim: the required size of the last dimension (the feature width).
    dtype_kind: "float", "int" or "bool".
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)} ({x.dim()} dimensions)")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {tuple(x.shape)}")
    if dtype_kind == "float" and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if dtype_kind == "int" and (x.is_floating_point() or x.dtype == torch.bool or x.is_complex()):
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {x.dtype}")
    if dtype_kind == "bool" and x.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean tensor (True = may attend), got dtype {x.dtype}")
