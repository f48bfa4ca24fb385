"""GPT extras: the KV cache (cached generation == uncached, token for token), the sampling
filters, and the FLOP count used in lesson 10."""
import pytest
import torch

from helpers import assert_close
from tfmlib.config import GPTConfig
from tfmlib.gpt import GPT, sample_next, sampling_probs, top_k_filter, top_p_filter
from tfmlib.kv_cache import KVCache, forward_flops


def _model(**overrides):
    torch.manual_seed(0)
    cfg = GPTConfig.preset("tiny", vocab_size=23, dropout=0.0, **overrides)
    return GPT(cfg).eval()


@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 1, "n_heads": 4, "n_layers": 2},
                                       {"positional": "sinusoidal", "norm_first": False}])
def test_forward_cached_equals_full_forward(overrides):
    model = _model(**overrides)
    idx = torch.randint(0, 23, (2, 12))
    full = model(idx)
    cache = KVCache(model.config.n_layers)
    parts = [model.forward_cached(idx[:, :5], cache)]          # prefill 5, then one at a time
    for t in range(5, 12):
        parts.append(model.forward_cached(idx[:, t:t + 1], cache))
    assert len(cache) == 12
    assert_close(torch.cat(parts, dim=1), full, what="cached logits")


@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 1, "n_heads": 2}])
def test_cached_generation_equals_uncached_greedy(overrides):
    model = _model(**overrides)
    prompt = torch.randint(0, 23, (3, 4))
    slow = model.generate(prompt, 30, temperature=0)
    fast = model.generate(prompt, 30, temperature=0, use_cache=True)
    assert torch.equal(slow, fast)


def test_cached_generation_past_max_len_and_seeded_sampling():
    model = _model()
    prompt = torch.randint(0, 23, (1, 60))                     # max_len 64: the window slides
    assert torch.equal(model.generate(prompt, 10, temperature=0),
                       model.generate(prompt, 10, temperature=0, use_cache=True))
    a = model.generate(prompt[:, :3], 20, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt[:, :3], 20, top_k=5, generator=torch.Generator().manual_seed(1), use_cache=True)
    assert torch.equal(a, b)


def test_forward_cached_rejects_overflow():
    model = _model()
    cache = KVCache(1)
    with pytest.raises(ValueError, match="max_len"):
        model.forward_cached(torch.zeros(1, 65, dtype=torch.long), cache)


def test_filters():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, -1.0]])
    assert torch.isinf(top_k_filter(logits, 1)).sum() == 4
    assert torch.isinf(top_k_filter(logits, 2)).sum() == 2               # the tie with the 2nd is kept
    assert torch.equal(top_k_filter(logits, 9), logits)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    probs = torch.softmax(logits, -1)[0]
    kept = ~torch.isinf(top_p_filter(logits, probs[0].item() + 1e-3))[0]    # crosses p with the second token
    assert kept[0] and kept.sum().item() == 2                          # the token crossing p is kept
    assert (~torch.isinf(top_p_filter(logits, probs[0].item() - 1e-3))).sum().item() == 1
    assert torch.equal(sampling_probs(logits, 0), torch.tensor([[1.0, 0, 0, 0, 0]]))
    assert_close(sampling_probs(logits, 1.0), torch.softmax(logits, -1), what="plain softmax")
    with pytest.raises(ValueError):
        top_p_filter(logits, 0.0)
    with pytest.raises(ValueError):
        sample_next(logits, temperature=-1)


def test_forward_flops_matches_linear_layer_count():
    cfg = GPTConfig.preset("tiny", vocab_size=23)
    T = 7
    dense = 2 * T * (4 * 32 * 32 + 2 * 32 * 64) + 2 * T * 32 * 23
    attention = 2 * 2 * (T * (T + 1) // 2) * 32
    assert forward_flops(cfg, T) == dense + attention
    # one cached step costs far less than recomputing the prefix
    assert forward_flops(cfg, 1, 63) < forward_flops(cfg, 64) / 20
