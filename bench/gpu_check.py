"""One prepared check for a machine with a GPU (about 5 minutes on one H100-class card; <= 8 minutes).

    python bench/gpu_check.py                 # prints three tables; paste them into bench/README.md
    python bench/gpu_check.py --quick         # fewer steps (a smoke test, ~2 minutes)

1. The CUDA paths of tfmlib.train.fit agree with float32: the same model, data and seed trained with
   amp=False, amp="bf16", amp="fp16" (GradScaler) and compile=True; each final loss within 0.05 nats of
   float32's (asserted) and the first step's loss within 0.01.
2. Step time, tokens/s and MFU of the ~100M presets (gpt-100m, llama-100m) at T = 1024, bf16, with and
   without torch.compile, through tfmlib.train_gpt's own train_step (the script's code path), plus the
   peak memory next to tfmlib.scaling.memory_plan's estimate.
3. tfmlib's GPT against bench/run.py's GPT of nn.TransformerEncoderLayer blocks, same config, bf16:
   one training step each, alternated, ratio = tfmlib / PyTorch.

Needs CUDA; refuses to run without it. Nothing is downloaded (the data is load_corpus's Shakespeare).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import TorchGPT  # noqa: E402
from tfmlib import GPT, GPTConfig  # noqa: E402
from tfmlib.data import LMBatches, load_corpus  # noqa: E402
from tfmlib.distributed import DistEnv, shard_batch, train_step  # noqa: E402
from tfmlib.losses import LMLoss  # noqa: E402
from tfmlib.scaling import format_bytes, memory_plan, mfu, peak_flops, train_flops_per_token  # noqa: E402
from tfmlib.tokenizers import CharTokenizer  # noqa: E402
from tfmlib.train import fit, make_optimizer  # noqa: E402


def char_ids():
    text = load_corpus("shakespeare")
    return torch.tensor(CharTokenizer().train(text).encode(text[:2_000_000]))


def check_fit_paths(ids, steps: int) -> None:
    print(f"\n## 1. fit's CUDA paths against float32 ({steps} steps, gpu preset, T=256, B=32)\n")
    print("| path | first loss | final loss | final - fp32 | seconds |\n|---|---|---|---|---|")
    vocab = int(ids.max()) + 1
    batches = LMBatches(ids, block_size=256, batch_size=32, seed=0)
    results = {}
    for name, options in {"fp32": dict(amp=False), "bf16": dict(amp="bf16"), "fp16 + GradScaler": dict(amp="fp16"),
                          "fp32 + compile": dict(amp=False, compile=True)}.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig.preset("gpu", vocab_size=vocab, max_len=256, dropout=0.0))
        history = fit(model, batches, loss_fn=LMLoss(), steps=steps, lr=1e-3, schedule="cosine", warmup_steps=10,
                      device="cuda", progress=False, **options)
        results[name] = history
        gap = history.loss[-1] - results["fp32"].loss[-1]
        print(f"| {name} | {history.loss[0]:.4f} | {history.loss[-1]:.4f} | {gap:+.4f} | {history.seconds:.1f} |")
    for name, history in results.items():
        assert abs(history.loss[0] - results["fp32"].loss[0]) < 0.01, name
        assert abs(history.loss[-1] - results["fp32"].loss[-1]) < 0.05, name


def time_preset(preset: str, ids, steps: int, compile: bool, batch: int = 16, T: int = 1024) -> None:
    torch.manual_seed(0)
    cfg = GPTConfig.preset(preset, max_len=T)
    model = GPT(cfg).cuda()
    optimizer = make_optimizer(model, 6e-4, 0.1, betas=(0.9, 0.95))
    forward_model = torch.compile(model) if compile else model
    data = LMBatches(ids % cfg.vocab_size, block_size=T, batch_size=batch, seed=0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps):
        micro = [tuple(t.cuda() for t in mb) for mb in shard_batch(data.batch_at(step), DistEnv(device=torch.device("cuda")))]
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(forward_model, optimizer, micro, LMLoss(), env=DistEnv(device=torch.device("cuda")),
                   autocast=autocast)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[3:])
    tokens_per_s = batch * T / step_s
    utilisation = mfu(tokens_per_s, train_flops_per_token(cfg, T), peak_flops("cuda"))
    plan = memory_plan(cfg, batch, T, amp=True)
    print(f"| {preset} | {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M | {'yes' if compile else 'no'} | "
          f"{step_s * 1e3:.0f} ms | {tokens_per_s:,.0f} | {100 * utilisation:.1f}% | "
          f"{format_bytes(torch.cuda.max_memory_allocated())} | {format_bytes(plan['total'])} |")
    del model, optimizer, forward_model
    torch.cuda.empty_cache()


def compare_reference(steps: int) -> None:
    print("\n## 3. tfmlib GPT vs nn.TransformerEncoderLayer GPT (bf16, one training step, alternated)\n")
    print("| config | tfmlib | PyTorch | ratio |\n|---|---|---|---|")
    for preset, B, T in (("gpu", 32, 256), ("gpt2-small", 8, 1024)):
        cfg = GPTConfig.preset(preset, vocab_size=50304 if preset != "gpu" else 96, max_len=T, dropout=0.0)
        torch.manual_seed(0)
        models = [GPT(cfg).cuda(), TorchGPT(cfg).cuda()]
        optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for m in models]
        x = torch.randint(0, cfg.vocab_size, (B, T + 1), device="cuda")

        def step(i):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = models[i](x[:, :-1])
            F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
            optimizers[i].step()
            optimizers[i].zero_grad(set_to_none=True)

        times = [[], []]
        for r in range(steps):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                torch.cuda.synchronize()
                start = time.perf_counter()
                step(i)
                torch.cuda.synchronize()
                times[i].append(time.perf_counter() - start)
        a, b = statistics.median(times[0][2:]), statistics.median(times[1][2:])
        print(f"| {preset} B={B} T={T} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.3f} |")
        del models, optimizers
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_check.py needs a CUDA GPU; none is visible.")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"# GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"peak {peak_flops('cuda') / 1e12:.0f} TFLOP/s (bf16, tfmlib.scaling.GPU_PEAK_BF16)")
    start = time.perf_counter()
    ids = char_ids()
    check_fit_paths(ids, 60 if args.quick else 200)
    print("\n## 2. the ~100M presets, B=16, T=1024, bf16 autocast (train_step of tfmlib.train_gpt)\n")
    print("| preset | params | compile | step | tokens/s | MFU | peak memory | memory_plan |\n"
          "|---|---|---|---|---|---|---|---|")
    steps = 10 if args.quick else 25
    for preset in ("gpt-100m", "llama-100m"):
        for compiled in (False, True):
            time_preset(preset, ids, steps, compiled)
    compare_reference(10 if args.quick else 30)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
