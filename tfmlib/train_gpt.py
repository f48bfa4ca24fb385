"""Train a tfmlib GPT from the command line: one CPU process, one GPU, or N processes under torchrun.

    python -m tfmlib.train_gpt --preset cpu --data shakespeare --steps 200            # CPU or one GPU
    torchrun --nproc_per_node=2 -m tfmlib.train_gpt --preset cpu --steps 200          # 2 processes (gloo on CPU)
    torchrun --nproc_per_node=8 -m tfmlib.train_gpt --preset gpt-100m --tokenizer gpt2 \\
        --block 1024 --batch 64 --accum 2 --steps 5000 --lr 6e-4 --compile --out runs/gpt100m   # 8 GPUs (NCCL)
    python -m tfmlib.train_gpt ... --out runs/x --resume                               # continue a run

--batch is the GLOBAL batch (sequences per optimizer step), the same whatever the number of processes:
each of N processes takes batch / N rows, in --accum micro-batches, so a run's result does not depend on
how it is spread (tfmlib.distributed). Only rank 0 logs, shows the progress bar and writes checkpoints
(tfmlib.checkpoint: weights, optimizer, step). Mixed precision: --amp auto = bf16 autocast on GPUs that
have it (fp16 + GradScaler on older ones), float32 on the CPU. The last lines report tokens/s and MFU
(tfmlib.scaling); --metrics FILE writes them as JSON.

Data: --data names a corpus of tfmlib.data.load_corpus (or a text file), cut into characters
(--tokenizer char) or GPT-2 tokens (--tokenizer gpt2); --tokens FILE reads ids instead (.pt, .npy, or
nanoGPT's uint16 .bin). The last 10 % is held out for --eval-every.

Shape legend: B the global batch (--batch sequences), T the sequence length (--block tokens).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import STATE_FILE, has_checkpoint, load_checkpoint, save_checkpoint
from .config import GPTConfig
from .data import LMBatches, load_corpus
from .distributed import cleanup_distributed, setup_distributed, shard_batch, train_step, unwrap, wrap_ddp
from .gpt import GPT
from .losses import LMLoss
from .scaling import mfu, peak_flops, train_flops_per_token
from .schedules import make_schedule
from .train import evaluate_loss, make_optimizer

__all__ = ["main", "build_parser", "load_token_ids", "make_autocast"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfmlib.train_gpt", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu", help="a GPTConfig preset (cpu, gpu, gpt-100m, llama-100m, ...)")
    p.add_argument("--data", default="shakespeare", help="load_corpus name or text file")
    p.add_argument("--tokens", default=None, help="token ids file (.pt, .npy, .bin uint16) instead of --data")
    p.add_argument("--vocab-size", type=int, default=None, help="with --tokens: default max id + 1")
    p.add_argument("--tokenizer", default="char", choices=["char", "gpt2"])
    p.add_argument("--block", type=int, default=64, help="sequence length T")
    p.add_argument("--batch", type=int, default=32, help="global batch: sequences per optimizer step")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per process per step")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--schedule", default="cosine", choices=["constant", "warmup", "cosine"])
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="checkpoint folder (written by rank 0)")
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, default=None, help="stop (and save) after this many steps of this "
                   "run, e.g. to fit a time limit; --steps still sets the schedule")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--metrics", default=None, help="write tokens/s, MFU and the losses here (JSON)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--check-replicas", action="store_true", help="at the end, compare every process's weights")
    return p


def load_token_ids(args) -> tuple[torch.Tensor, int]:
    """(ids (N,), vocab size) from --tokens or from --data + --tokenizer."""
    if args.tokens:
        path = Path(args.tokens)
        if path.suffix == ".pt":
            ids = torch.load(path, weights_only=True)
        elif path.suffix in (".npy", ".bin"):
            import numpy as np
            array = np.load(path) if path.suffix == ".npy" else np.memmap(path, dtype=np.uint16, mode="r")
            ids = torch.from_numpy(array.astype(np.int64))
        else:
            raise ValueError(f"--tokens must be a .pt, .npy or .bin file, got {str(path)!r}")
        ids = ids.long().flatten()
        return ids, args.vocab_size or int(ids.max()) + 1
    text = load_corpus(args.data)
    if args.tokenizer == "gpt2":
        from .tokenizers import gpt2_tokenizer
        tok = gpt2_tokenizer()
        return torch.tensor(tok.encode(text.replace("<|endoftext|>", ""))), tok.vocab_size
    from .tokenizers import CharTokenizer
    tok = CharTokenizer().train(text)
    return torch.tensor(tok.encode(text)), tok.vocab_size


def make_autocast(device: torch.device, amp: str):
    """(autocast context, GradScaler or None, dtype name) for --amp on this device."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext(), None, "float32"
    if device.type == "cuda":
        bf16 = amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported())
        if bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16), None, "bfloat16"
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda"), "float16"
    if amp == "fp16":
        raise ValueError("--amp fp16 needs a GPU; on the CPU use --amp bf16 or off")
    return torch.autocast("cpu", dtype=torch.bfloat16), None, "bfloat16"


def _round_up(n: int, multiple: int = 64) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def _replica_difference(model, env) -> float:
    """The largest |difference| between any process's weights and rank 0's (0.0 for one process)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])   # (n_params,)
    if env.world_size == 1:
        return 0.0
    copies = [torch.empty_like(flat) for _ in range(env.world_size)]
    torch.distributed.all_gather(copies, flat)
    return max(float((c - copies[0]).abs().max()) for c in copies)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    env = setup_distributed(args.device)
    try:
        return _run(args, env)
    finally:
        cleanup_distributed()


def _run(args, env) -> dict:
    log = print if env.is_main else (lambda *a, **k: None)
    ids, vocab = load_token_ids(args)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    big = args.preset not in ("tiny", "cpu", "llama-cpu")
    cfg = GPTConfig.preset(args.preset, vocab_size=_round_up(vocab) if big else vocab, max_len=args.block,
                           dropout=args.dropout)
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(env.device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay, betas=(0.9, 0.95))
    autocast, scaler, dtype_name = make_autocast(env.device, args.amp)
    base_lrs = [g["lr"] for g in optimizer.param_groups]       # before a checkpoint's scheduled lr replaces them
    step = 0
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out (the checkpoint folder)")
        if has_checkpoint(args.out):
            saved = torch.load(Path(args.out) / STATE_FILE, map_location="cpu", weights_only=True)["extra"]
            if saved.get("config") != asdict(cfg):
                raise ValueError(f"the checkpoint in {args.out!r} was trained with another config: "
                                 f"{saved.get('config')} != {asdict(cfg)}")
            step = load_checkpoint(args.out, model, optimizer, scaler=scaler, restore_rng=False)["step"]
            log(f"resumed from {args.out} at step {step}")
    ddp_model = wrap_ddp(model, env)
    forward_model = torch.compile(ddp_model) if args.compile else ddp_model
    batches = LMBatches(train_ids, args.block, args.batch, seed=args.seed)
    schedule = make_schedule(args.schedule, args.warmup, args.steps)
    loss_fn = LMLoss()

    def save():
        if args.out and env.is_main:
            save_checkpoint(args.out, model, optimizer, step=step, scaler=scaler,
                            extra={"config": asdict(cfg), "args": vars(args)})
        if env.world_size > 1:
            torch.distributed.barrier()

    def val_loss() -> float:
        val = LMBatches(val_ids, args.block, max(1, args.batch // env.world_size), seed=args.seed + 1)
        with autocast:
            return evaluate_loss(model, [val.batch_at(i) for i in range(args.eval_batches)], loss_fn)

    flops_per_token = train_flops_per_token(cfg, args.block)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{env.world_size} process(es) on {env.device.type} ({env.backend or 'no process group'}), "
        f"{n_params / 1e6:.2f}M parameters, {len(train_ids):,} training tokens, vocab {cfg.vocab_size}, "
        f"global batch {args.batch} x {args.block} tokens in {env.world_size} x {args.accum} micro-batches, "
        f"{dtype_name}{', compiled' if args.compile else ''}")
    losses, evals = [], []
    bar = tqdm(total=args.steps, initial=step, disable=not env.is_main or args.no_progress, unit="step")
    timed_tokens, timed_seconds = 0, 0.0
    model.train()
    last = args.steps if args.stop_after is None else min(args.steps, step + args.stop_after)
    while step < last:
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * schedule(step)
        global_batch = batches.batch_at(step)                     # (B, T) x 2, the same on every process
        micro = [tuple(t.to(env.device, non_blocking=True) for t in mb)
                 for mb in shard_batch(global_batch, env, args.accum)]
        if env.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = train_step(forward_model, optimizer, micro, loss_fn, env=env, autocast=autocast, scaler=scaler,
                          grad_clip=args.grad_clip)              # all-reduces the loss: synchronised
        elapsed = time.perf_counter() - start
        if len(losses) >= 2 or last - step <= 2:          # the first steps warm up (and compile)
            timed_tokens, timed_seconds = timed_tokens + args.batch * args.block, timed_seconds + elapsed
        step += 1
        losses.append(loss)
        if not math.isfinite(loss):
            log(f"stopping: the loss is {loss} at step {step}")
            break
        bar.update(1)
        if step % args.log_every == 0 or step == args.steps:
            bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        if args.eval_every and (step % args.eval_every == 0 or step == args.steps):
            evals.append({"step": step, "val_loss": val_loss() if env.is_main else float("nan")})
            log(f"step {step}: val loss {evals[-1]['val_loss']:.4f}")
        if args.save_every and step % args.save_every == 0:
            save()
    bar.close()
    save()
    replica_diff = _replica_difference(model, env) if args.check_replicas else None
    if replica_diff is not None:
        log(f"the {env.world_size} processes' weights: max |difference| = {replica_diff}")
    tokens_per_s = timed_tokens / timed_seconds if timed_seconds else float("nan")
    peak = peak_flops(env.device)
    utilisation = mfu(tokens_per_s, flops_per_token, peak, env.world_size) if timed_seconds else float("nan")
    log(f"{tokens_per_s:,.0f} tokens/s over {env.world_size} process(es); "
        f"{flops_per_token / 1e6:.2f} MFLOPs per token; peak {peak / 1e12:.3g} TFLOP/s per device; "
        f"MFU {100 * utilisation:.1f}%")
    metrics = {"tokens_per_s": tokens_per_s, "mfu": utilisation, "flops_per_token": flops_per_token,
               "peak_flops": peak, "world_size": env.world_size, "losses": losses, "evals": evals,
               "step": step, "n_params": n_params, "dtype": dtype_name,
               "replica_max_diff": replica_diff}
    if args.metrics and env.is_main:
        Path(args.metrics).write_text(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
