"""tfmlib's attention equals PyTorch's F.scaled_dot_product_attention and nn.MultiheadAttention."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_close
from tfmlib import (MultiHeadAttention, causal_mask, merge_heads, padding_mask, repeat_kv,
                    scaled_dot_product_attention, split_heads, record_attention)
from tfmlib.interop import copy_mha_from_torch


def qkv(B=2, H=3, T_q=5, T_k=7, d=8, requires_grad=True):
    return [torch.randn(B, H, T, d, requires_grad=requires_grad) for T in (T_q, T_k, T_k)]


def _grads(out, tensors):
    g = torch.randn_like(out)
    return torch.autograd.grad(out, tensors, g)


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "both"])
def test_sdpa_matches_pytorch_outputs_and_gradients(kind):
    T = 6
    q, k, v = qkv(T_q=T, T_k=T)
    pad = padding_mask(torch.tensor([[5, 3, 2, 7, 0, 0], [1, 1, 1, 1, 1, 4]]))  # (B, 1, 1, T)
    mask = {"none": None, "causal": causal_mask(T), "padding": pad, "both": pad & causal_mask(T)}[kind]
    ours, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(ours, ref, what="context")
    torch.manual_seed(1)
    g = torch.randn_like(ref)
    for a, b, name in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), "qkv"):
        assert_close(a, b, what=f"grad {name}")
    assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), what="row sums")
    if mask is not None:
        assert torch.all(weights.masked_select(~mask.expand_as(weights)) == 0)


def test_sdpa_cross_attention_lengths_differ():
    q, k, v = qkv(T_q=3, T_k=9)
    ours, w = scaled_dot_product_attention(q, k, v)
    assert ours.shape == (2, 3, 3, 8) and w.shape == (2, 3, 3, 9)
    assert_close(ours, F.scaled_dot_product_attention(q, k, v), what="context")


def test_causal_mask_is_lower_triangular_true_means_attend():
    m = causal_mask(4)
    assert m.dtype == torch.bool
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, True, False], [True, True, True, True]]
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]


def test_padding_mask_shape_and_values():
    m = padding_mask(torch.tensor([[4, 5, 0], [7, 0, 0]]), pad_id=0)
    assert m.shape == (2, 1, 1, 3)
    assert m[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]


def test_split_merge_heads_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 3, 2)
    assert_close(h[0, 1, 2], x[0, 2, 2:4], what="head 1 takes features 2:4 of every token")
    assert_close(merge_heads(h), x, what="merge(split(x))")


def _mha_pair(C=16, H=4, dropout=0.0, bias=True):
    ref = nn.MultiheadAttention(C, H, dropout=dropout, bias=bias, batch_first=True)
    mine = MultiHeadAttention(C, H, dropout=dropout, bias=bias)
    copy_mha_from_torch(mine, ref)
    return mine, ref


def _mha_param_pairs(mine, ref):
    C = mine.d_model
    return [(torch.cat([mine.q_proj.weight.grad, mine.k_proj.weight.grad, mine.v_proj.weight.grad]),
             ref.in_proj_weight.grad, "in_proj_weight"),
            (torch.cat([mine.q_proj.bias.grad, mine.k_proj.bias.grad, mine.v_proj.bias.grad]),
             ref.in_proj_bias.grad, "in_proj_bias"),
            (mine.out_proj.weight.grad, ref.out_proj.weight.grad, "out_proj.weight")]


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("case", ["self", "self_causal", "self_padding", "cross", "cross_padding"])
def test_mha_matches_nn_multiheadattention(case, need_weights):
    mine, ref = _mha_pair()
    B, T, S, C = 3, 5, 7, 16
    x = torch.randn(B, T, C, requires_grad=True)
    mem = torch.randn(B, S, C, requires_grad=True)
    kv = mem if case.startswith("cross") else x
    T_k = kv.shape[1]
    key_pad = torch.zeros(B, T_k, dtype=torch.bool)  # PyTorch convention: True = ignore
    key_pad[0, -2:] = True
    key_pad[2, -1] = True
    my_mask, ref_kw = None, {}
    if case == "self_causal":
        my_mask = causal_mask(T)
        ref_kw = dict(attn_mask=~my_mask)
    elif case.endswith("padding"):
        my_mask = (~key_pad)[:, None, None, :]  # (B, 1, 1, T_k), True = may attend
        ref_kw = dict(key_padding_mask=key_pad)
    ours, w = mine(x, kv, kv, mask=my_mask, need_weights=need_weights)
    expected, ref_w = ref(x, kv, kv, need_weights=True, average_attn_weights=False, **ref_kw)
    assert_close(ours, expected, what="output")
    if need_weights:
        assert_close(w, ref_w, what="per-head attention weights")
    else:
        assert w is None
    g = torch.randn_like(ours)
    inputs = (x, mem) if case.startswith("cross") else (x,)
    for a, b in zip(torch.autograd.grad(ours, inputs, g, retain_graph=True),
                    torch.autograd.grad(expected, inputs, g, retain_graph=True)):
        assert_close(a, b, what="input gradient")
    ours.backward(g)
    expected.backward(g)
    for a, b, name in _mha_param_pairs(mine, ref):
        assert_close(a, b, atol=1e-5, rtol=1e-4, what=f"grad {name}")


def test_mha_is_causal_flag_equals_explicit_mask():
    mine, _ = _mha_pair()
    x = torch.randn(2, 6, 16)
    a, _ = mine(x, is_causal=True)
    b, _ = mine(x, mask=causal_mask(6))
    assert_close(a, b, what="is_causal vs explicit causal mask")


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_grouped_query_equals_attention_with_repeated_kv_heads(n_kv_heads):
    C, H, hs = 16, 4, 4
    gqa = MultiHeadAttention(C, H, n_kv_heads=n_kv_heads)
    full = MultiHeadAttention(C, H)
    rep = H // n_kv_heads
    with torch.no_grad():
        full.q_proj.load_state_dict(gqa.q_proj.state_dict())
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for src, dst in ((gqa.k_proj, full.k_proj), (gqa.v_proj, full.v_proj)):
            # (H_kv*hs, C) -> (H_kv, hs, C) -> repeat each kv head rep times -> (H*hs, C)
            dst.weight.copy_(src.weight.view(n_kv_heads, hs, C).repeat_interleave(rep, 0).reshape(C, C))
            dst.bias.copy_(src.bias.view(n_kv_heads, hs).repeat_interleave(rep, 0).reshape(C))
    x = torch.randn(2, 5, C)
    for need in (False, True):
        a, wa = gqa(x, mask=causal_mask(5), need_weights=need)
        b, wb = full(x, mask=causal_mask(5), need_weights=need)
        assert_close(a, b, what=f"GQA output (need_weights={need})")
        if need:
            assert_close(wa, wb, what="GQA weights")
    assert gqa.k_proj.weight.shape == (n_kv_heads * hs, C)


def test_repeat_kv_groups_consecutive_query_heads():
    kv = torch.arange(2.0).view(1, 2, 1, 1)  # two kv heads: 0 and 1
    assert repeat_kv(kv, 2).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_record_attention_keeps_weights_for_plotting():
    mine, _ = _mha_pair()
    x = torch.randn(1, 4, 16)
    with record_attention(mine) as layers:
        out, _ = mine(x)
    assert layers[0].attn_weights.shape == (1, 4, 4, 4)
    assert_close(layers[0].attn_weights.sum(-1), torch.ones(1, 4, 4), what="recorded weights rows")
    assert mine.record_weights is False
