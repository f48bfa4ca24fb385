"""What a model costs as it grows: parameters, training FLOPs per token, the memory plan of one
training step, the device's peak speed, and MFU (model FLOPs utilisation).

    cfg = GPTConfig.preset("gpt-100m")
    n = gpt_param_count(cfg)                               # counted from the config, no model built
    plan = memory_plan(cfg, batch_size=16, seq_len=1024, amp=True)   # bytes: weights, grads, adam, activations
    flops = train_flops_per_token(cfg, seq_len=1024)       # forward + backward = 3 x forward
    mfu(tokens_per_s, flops, peak_flops("cuda"))           # fraction of the device's peak

Training FLOPs: the backward pass costs twice the forward (one product for the input's gradient,
one for the weight's), so a step costs 3 x forward ~ 6 N FLOPs per token plus attention (Kaplan et
al. 2020; nanoGPT's MFU). Peak: a table of known GPUs (dense bf16 tensor-core figures from the
vendors' datasheets) or, on a CPU, measured once by a float32 matrix product.

Shape legend: B batch, T sequence length, C d_model, F d_ff, V vocabulary, L layers.
"""
from __future__ import annotations

import time

import torch

from .config import GPTConfig
from .kv_cache import forward_flops

__all__ = ["gpt_param_count", "train_flops_per_token", "memory_plan", "activation_elements_per_token",
           "peak_flops", "measure_cpu_peak_flops", "mfu", "GPU_PEAK_BF16", "format_bytes"]

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets.
GPU_PEAK_BF16 = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 756e12, "A100": 312e12,
    "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12,
    "V100": 125e12, "T4": 65e12,  # V100 and T4 have no bf16: their fp16 tensor-core peak
}


def gpt_param_count(config: GPTConfig) -> int:
    """Trainable parameters of tfmlib.GPT(config), from the config alone (tested equal to counting)."""
    C, F, V, L = config.d_model, config.d_ff, config.vocab_size, config.n_layers
    kv = (config.n_kv_heads or config.n_heads) * config.head_size
    norm = C if config.norm == "rmsnorm" else 2 * C                     # RMSNorm: weight; LayerNorm: + bias
    b = 1 if config.bias else 0
    attn = C * C + 2 * C * kv + C * C + b * (C + 2 * kv + C)            # q, k, v, out (+ biases)
    ffn = 3 * C * F + b * (2 * F + C) if config.ffn == "swiglu" else 2 * C * F + b * (F + C)
    per_layer = attn + ffn + 2 * norm
    embeddings = V * C + (config.max_len * C if config.positional == "learned" else 0)
    head = 0 if config.tie_weights else V * C
    return L * per_layer + embeddings + norm + head


def train_flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """FLOPs of one training step per token at length seq_len: 3 x the forward's matrix products."""
    return 3 * forward_flops(config, seq_len) / seq_len


def activation_elements_per_token(config: GPTConfig) -> int:
    """Numbers autograd keeps for the backward pass, per token, for the whole model (dropout 0,
    attention by F.scaled_dot_product_attention, which keeps its output and not the T x T weights).

    Per block: each norm's input and output (2C; RMSNorm, written out, one more C), q, k and v
    (C + 2 kv; RoPE keeps them before rotation too), the attention output (C), the FFN's hidden
    activations (2F; SwiGLU 4F). Then the final norm and the log-softmax of the logits (V).
    Tested within 10 % of what autograd's saved-tensor hooks count.
    """
    C, F, V = config.d_model, config.d_ff, config.vocab_size
    kv = (config.n_kv_heads or config.n_heads) * config.head_size
    norm = 3 * C if config.norm == "rmsnorm" else 2 * C
    qkv = (C + 2 * kv) + ((C + kv) if config.positional == "rope" else 0)
    ffn = 4 * F if config.ffn == "swiglu" else 2 * F                   # SwiGLU: gate, silu(gate), up, product
    per_block = 2 * norm + qkv + C + ffn
    return config.n_layers * per_block + norm + V


def _fp32_elements_under_autocast(config: GPTConfig) -> int:
    """Of activation_elements_per_token, those autocast leaves in float32: the norms' inputs (the
    residual stream; RMSNorm's written-out intermediate too), the final norm's, and the log-softmax."""
    C = config.d_model
    norm_inputs = 2 * C if config.norm == "rmsnorm" else C
    return config.n_layers * 2 * norm_inputs + norm_inputs + config.vocab_size


def memory_plan(config: GPTConfig, batch_size: int, seq_len: int, *, amp: bool = False,
                optimizer: str = "adamw") -> dict[str, int]:
    """Bytes one training step needs, by kind: weights, grads, optimizer (AdamW: 2 float32 moments per
    parameter), activations (kept for backward), autocast_copies (bf16 copies of the weights that
    autocast makes each step), total.

    Under autocast (amp=True) weights, gradients and moments stay float32 (mixed precision keeps
    the master copy in float32); the matrix products' inputs are kept in bf16, the residual stream,
    norms and loss in float32. Tested within 15 % of what autograd keeps (CPU autocast). Temporary
    buffers and the allocator's slack come on top: plan for ~10-20 % more.
    """
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    n = gpt_param_count(config)
    elements = activation_elements_per_token(config)
    if amp:
        fp32 = _fp32_elements_under_autocast(config)
        per_token = 4 * fp32 + 2 * (elements - fp32)
    else:
        per_token = 4 * elements
    plan = {"weights": 4 * n, "grads": 4 * n, "optimizer": (8 if optimizer == "adamw" else 0) * n,
            "activations": per_token * batch_size * seq_len, "autocast_copies": 2 * n if amp else 0}
    plan["total"] = sum(plan.values())
    return plan


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


_CPU_PEAK: dict[int, float] = {}


def measure_cpu_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """float32 FLOP/s of the best of ``repeats`` (size x size) @ (size x size) products, with
    PyTorch's current thread count; measured once per thread count and remembered."""
    threads = torch.get_num_threads()
    if threads not in _CPU_PEAK:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b                                                          # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        _CPU_PEAK[threads] = 2 * size ** 3 / best
    return _CPU_PEAK[threads]


def peak_flops(device: torch.device | str = "cpu") -> float:
    """The device's peak FLOP/s: a GPU's from GPU_PEAK_BF16 (by name; unknown cards: NaN), the CPU's
    measured by measure_cpu_peak_flops."""
    device = torch.device(device)
    if device.type == "cpu":
        return measure_cpu_peak_flops()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in sorted(GPU_PEAK_BF16, key=len, reverse=True):       # "H100 SXM" before "H100"
            if key.replace(" ", "").lower() in name.replace(" ", "").lower():
                return GPU_PEAK_BF16[key]
    return float("nan")


def mfu(tokens_per_s: float, flops_per_token: float, peak: float, n_devices: int = 1) -> float:
    """Model FLOPs utilisation: the fraction of the devices' peak the model's own FLOPs use."""
    if tokens_per_s < 0 or flops_per_token <= 0 or n_devices < 1:
        raise ValueError(f"need tokens_per_s >= 0, flops_per_token > 0, n_devices >= 1; got "
                         f"{tokens_per_s}, {flops_per_token}, {n_devices}")
    return tokens_per_s * flops_per_token / (peak * n_devices)
