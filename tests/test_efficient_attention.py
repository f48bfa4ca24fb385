"""Tiled (online-softmax) attention equals PyTorch's fused kernel and never builds n x n scores;
sliding-window masks and the FLOP count."""
import pytest
import torch
import torch.nn.functional as F

from tfmlib.efficient_attention import LargestTensor, attention_flops, sliding_window_mask, tiled_attention


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("n_q,n_k,block", [(50, 50, 16), (7, 40, 8), (33, 33, 64), (1, 9, 4)])
def test_tiled_attention_equals_sdpa(is_causal, n_q, n_k, block):
    q, k, v = torch.randn(2, 3, n_q, 8), torch.randn(2, 3, n_k, 8), torch.randn(2, 3, n_k, 8)
    mask = torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q) if is_causal else None
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(tiled_attention(q, k, v, block=block, is_causal=is_causal), ref, atol=1e-5, rtol=1e-5)


def test_tiled_attention_gradients_equal_sdpa():
    q, k, v = (torch.randn(1, 2, 30, 8, requires_grad=True) for _ in range(3))
    g = torch.randn(1, 2, 30, 8)
    grads = torch.autograd.grad((tiled_attention(q, k, v, block=7, is_causal=True) * g).sum(), (q, k, v))
    ref = torch.autograd.grad((F.scaled_dot_product_attention(q, k, v, is_causal=True) * g).sum(), (q, k, v))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tiled_attention_never_builds_the_score_matrix():
    n, d, block = 512, 16, 64
    q, k, v = torch.randn(3, 1, 1, n, d).unbind(0)
    with LargestTensor() as full:
        torch.softmax(q @ k.transpose(-2, -1) * d ** -0.5, -1) @ v
    with LargestTensor() as tiled:
        tiled_attention(q, k, v, block=block)
    assert full.numel == n * n
    assert tiled.numel == n * block


def test_sliding_window_mask_and_flops():
    band = sliding_window_mask(6, 3)
    assert band.sum(-1).tolist() == [1, 2, 3, 3, 3, 3]
    assert torch.equal(band, torch.ones(6, 6, dtype=torch.bool).tril() & ~torch.ones(6, 6, dtype=torch.bool).tril(-3))
    assert attention_flops(10, 4) == 4 * 100 * 4
    assert attention_flops(10, 4, causal=True) == 4 * 55 * 4
    assert attention_flops(6, 4, window=3) == 4 * int(band.sum()) * 4
    assert attention_flops(2048, 64) == 4 * attention_flops(1024, 64)


def test_bad_input():
    with pytest.raises(ValueError, match="block must be a positive number of keys, got 0"):
        tiled_attention(torch.randn(1, 4, 2), torch.randn(1, 4, 2), torch.randn(1, 4, 2), block=0)
    with pytest.raises(ValueError, match="do not fit"):
        tiled_attention(torch.randn(1, 4, 2), torch.randn(1, 4, 3), torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="n and window must be at least 1, got n=4, window=0"):
        sliding_window_mask(4, 0)
