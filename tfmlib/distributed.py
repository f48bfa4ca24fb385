"""Data-parallel training with PyTorch's own engine: torchrun starts N processes, each holds a full
copy of the model, reads its own share of the batch, and DistributedDataParallel (DDP) all-reduces
the gradients during backward, so every copy takes the same optimizer step.

    env = setup_distributed()                     # reads torchrun's RANK, WORLD_SIZE, LOCAL_RANK
    model = wrap_ddp(GPT(cfg).to(env.device), env)
    loss = train_step(model, optimizer, micro_batches, LMLoss(), env=env)
    cleanup_distributed()

One process (plain ``python``) is world_size 1: no process group, no wrapper, the same code.
Backends: NCCL between GPUs, gloo between CPU processes.

The loss is normalised per token over the whole step: every process counts its target tokens, the
counts are all-reduced first, and each micro-batch contributes (its sum of token losses) /
(tokens in the whole step). N processes x k micro-batches then compute exactly the gradient of one
process on the concatenated batch (up to float rounding), however unevenly the tokens fall.

Shape legend: B rows of the step's global batch, T sequence length.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistEnv", "setup_distributed", "cleanup_distributed", "wrap_ddp", "unwrap", "shard_batch",
           "train_step", "all_reduce_sum", "torchrun"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank (0 .. world_size - 1), local_rank (its GPU), device, backend."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows a progress bar and writes checkpoints."""
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistEnv:
    """Join the process group torchrun describes (env vars RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    device: "cpu", "cuda" or None (CUDA when available). Without torchrun: world_size 1, nothing joined.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = None
    if world_size > 1:
        backend = "nccl" if kind == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, device_id=dev if kind == "cuda" else None)
    return DistEnv(rank, local_rank, world_size, dev, backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel(model) when world_size > 1 (rank 0's weights are broadcast to all), else model."""
    if env.world_size == 1:
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def all_reduce_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The sum over all processes (in place; a no-op for one process)."""
    if env.world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def shard_batch(batch: tuple[torch.Tensor, ...], env: DistEnv, accum_steps: int = 1) -> list[tuple]:
    """This process's micro-batches of one step's global batch: rows (B, ...) are cut into
    world_size x accum_steps equal slices; process r takes slices r*k .. r*k + k - 1.

    Raises ValueError when B is not divisible by world_size x accum_steps.
    """
    rows, parts = batch[0].shape[0], env.world_size * accum_steps
    if accum_steps < 1 or rows % parts:
        raise ValueError(f"the global batch ({rows} rows) must split into world_size x accum_steps = "
                         f"{env.world_size} x {accum_steps} equal micro-batches")
    size = rows // parts
    start = env.rank * accum_steps * size
    return [tuple(t[start + i * size: start + (i + 1) * size] for t in batch) for i in range(accum_steps)]


def _count_targets(batch, ignore_index: int) -> torch.Tensor:
    return (batch[-1] != ignore_index).sum()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list, loss_fn, *,
               env: DistEnv = DistEnv(), autocast=None, scaler=None, grad_clip: float | None = 1.0) -> float:
    """One optimizer step over this process's micro-batches; returns the step's loss per token
    (over all processes). loss_fn needs ``totals(model, batch) -> (sum, count)`` (tfmlib.losses).

    Gradient = d(sum of every token's loss in the step) / (number of tokens in the step), the
    gradient of one process on the whole batch: DDP averages the N gradients, so each process
    scales its sum by world_size / total_tokens. Micro-batches before the last run under
    ``no_sync`` (no all-reduce until the gradients are complete).
    """
    if not hasattr(loss_fn, "totals"):
        raise TypeError(f"loss_fn must have totals(model, batch) -> (sum, count), e.g. LMLoss(); "
                        f"got {type(loss_fn).__name__}")
    autocast = autocast or contextlib.nullcontext()
    ignore_index = getattr(loss_fn, "ignore_index", -100)
    counts = torch.stack([_count_targets(b, ignore_index) for b in micro_batches]).sum()
    total_tokens = all_reduce_sum(counts.to(env.device, torch.float64), env)   # tokens in the whole step
    scale = env.world_size / total_tokens.float()
    loss_sum = torch.zeros((), device=env.device, dtype=torch.float64)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = model.no_sync() if (hasattr(model, "no_sync") and not last) else contextlib.nullcontext()
        with sync:
            with autocast:
                token_sum, _ = loss_fn.totals(model, batch)
            loss = token_sum.float() * scale
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += token_sum.detach().double()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(all_reduce_sum(loss_sum, env) / total_tokens)


def _descendants(pid: int) -> list[int]:
    """Child processes, grandchildren, ... of pid (Linux /proc; elsewhere an empty list)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def torchrun(args: list[str], nproc_per_node: int = 2, timeout: float = 180,
             threads_per_process: int = 1) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node=N *args`` (a free port is chosen) and capture its
    output, e.g. torchrun(["-m", "tfmlib.train_gpt", "--steps", "3"]). Each process gets
    ``threads_per_process`` CPU threads. After ``timeout`` seconds the launcher and all its
    processes are killed and subprocess.TimeoutExpired is raised: a stuck collective never hangs
    the caller.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process), "TFM_THREADS": str(threads_per_process)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *_descendants(proc.pid)]:   # torchrun starts its workers in their own sessions
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
