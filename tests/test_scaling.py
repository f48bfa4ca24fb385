"""tfmlib.scaling: parameter counts equal the built models', the activation formula matches what
autograd keeps, the ~100M presets' memory plan, FLOPs per token and MFU."""
import math

import pytest
import torch
import torch.nn.functional as F

from tfmlib import GPT, GPTConfig, count_parameters
from tfmlib.kv_cache import forward_flops
from tfmlib.scaling import (GPU_PEAK_BF16, activation_elements_per_token, gpt_param_count, measure_cpu_peak_flops,
                            memory_plan, mfu, peak_flops, train_flops_per_token)

GiB = 2 ** 30


@pytest.mark.parametrize("preset, overrides", [
    ("tiny", {}), ("cpu", {}), ("llama-cpu", {}), ("cpu", dict(bias=False, tie_weights=False, positional="sinusoidal")),
    ("gpt-100m", {}), ("llama-100m", {}), ("gpt2-small", {})])
def test_param_count_equals_the_model(preset, overrides):
    cfg = GPTConfig.preset(preset, **overrides)
    with torch.device("meta"):                     # no memory, no init cost, even at 110M parameters
        model = GPT(cfg)
    assert gpt_param_count(cfg) == count_parameters(model)


def test_the_100m_presets():
    gpt, llama = GPTConfig.preset("gpt-100m"), GPTConfig.preset("llama-100m")
    assert 100e6 <= gpt_param_count(gpt) <= 115e6 and 100e6 <= gpt_param_count(llama) <= 115e6
    assert (gpt.d_model, gpt.n_heads, gpt.d_ff, gpt.max_len, gpt.vocab_size % 64) == (768, 12, 3072, 1024, 0)
    assert (llama.norm, llama.ffn, llama.positional, llama.n_kv_heads, llama.tie_weights) == \
        ("rmsnorm", "swiglu", "rope", 4, False)


def _saved_bytes(cfg, B=4, T=32, amp=False):
    model = GPT(cfg)
    params = {p.data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.data_ptr() not in params and t.is_floating_point():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    x = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        F.cross_entropy(model(x).float().flatten(0, 1), x.flatten())
    return sum(storages.values())


def _saved_bytes_per_token(cfg, B=4, T=32):
    return _saved_bytes(cfg, B, T) / (B * T)


@pytest.mark.parametrize("preset, overrides", [("tiny", {}), ("cpu", {}), ("llama-cpu", {}),
                                               ("cpu", dict(d_model=128, n_heads=4, d_ff=512, vocab_size=300))])
def test_activation_formula_matches_what_autograd_keeps(preset, overrides):
    cfg = GPTConfig.preset(preset, dropout=0.0, **overrides)
    measured = _saved_bytes_per_token(cfg) / 4
    assert measured == pytest.approx(activation_elements_per_token(cfg), rel=0.10)


@pytest.mark.parametrize("preset, overrides", [("cpu", dict(d_model=256, d_ff=1024, vocab_size=512)),
                                               ("llama-cpu", dict(d_model=256, d_ff=688, vocab_size=512))])
def test_memory_plan_under_autocast_matches_what_autograd_keeps(preset, overrides):
    cfg = GPTConfig.preset(preset, dropout=0.0, **overrides)
    small, large = _saved_bytes(cfg, B=4, amp=True), _saved_bytes(cfg, B=8, amp=True)   # T = 32
    per_token, constant = (large - small) / 128, small - (large - small)  # bytes a token; bf16 weight copies
    plan = memory_plan(cfg, batch_size=1, seq_len=1, amp=True)
    assert plan["activations"] == pytest.approx(per_token, rel=0.15)
    assert plan["autocast_copies"] == pytest.approx(constant, rel=0.10)
    assert plan["activations"] < 0.7 * memory_plan(cfg, 1, 1)["activations"]    # bf16 saves, but not half


def test_memory_plan_of_gpt_100m():
    cfg = GPTConfig.preset("gpt-100m")
    n = gpt_param_count(cfg)
    plan = memory_plan(cfg, batch_size=16, seq_len=1024, amp=True)
    assert (plan["weights"], plan["grads"], plan["optimizer"]) == (4 * n, 4 * n, 8 * n)   # 16 bytes a parameter
    assert 1.6 * GiB < plan["weights"] + plan["grads"] + plan["optimizer"] < 1.7 * GiB
    assert 6 * GiB < plan["activations"] < 10 * GiB          # activations dominate at 16 x 1024 tokens
    assert plan["autocast_copies"] == 2 * n
    assert plan["total"] == sum(v for k, v in plan.items() if k != "total") < 12 * GiB   # fits a 16 GB card
    fp32 = memory_plan(cfg, batch_size=16, seq_len=1024)
    assert 1.3 * plan["activations"] < fp32["activations"] < 2 * plan["activations"]   # float32 logits stay
    assert memory_plan(cfg, 32, 1024, amp=True)["activations"] == 2 * plan["activations"]
    with pytest.raises(ValueError, match="optimizer"):
        memory_plan(cfg, 1, 8, optimizer="adam8bit")


def test_flops_per_token_and_mfu():
    cfg = GPTConfig.preset("gpt-100m")
    per_token = train_flops_per_token(cfg, 1024)
    assert per_token == 3 * forward_flops(cfg, 1024) / 1024
    non_embedding = gpt_param_count(cfg) - cfg.max_len * cfg.d_model
    assert 6 * non_embedding < per_token < 6 * non_embedding * 1.15   # 6N plus attention
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert mfu(1000.0, 1e9, 1e13, n_devices=2) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="n_devices"):
        mfu(1.0, 1.0, 1.0, n_devices=0)


def test_peak_flops():
    assert measure_cpu_peak_flops() == peak_flops("cpu") > 1e9          # measured once, remembered
    assert GPU_PEAK_BF16["H100 SXM"] > GPU_PEAK_BF16["A100"]
    assert math.isnan(peak_flops("meta"))
