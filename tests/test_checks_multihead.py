"""The lesson-04 checks catch realistic wrong implementations, with the right hint,
and pass the reference solution."""
import math

import pytest
import torch

from helpers import assert_fails, stub
import tfmlib.checks.multihead as mh
from tfmlib.attention import masked_softmax
from tfmlib.multihead import MultiHeadAttention, merge_heads, repeat_kv, split_heads


# ---------------------------------------------------------------- split_heads

def split_good(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def split_tokens(x, n_heads):  # cuts the sequence, not the features
    B, T, C = x.shape
    return x.view(B, n_heads, T, C // n_heads)


def split_strided(x, n_heads):  # head h gets features h, h + H, h + 2H, ...
    B, T, C = x.shape
    return x.view(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)


def split_no_transpose(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads)


def split_view_after_transpose(x, n_heads):  # transpose first, then view: not contiguous
    B, T, C = x.shape
    return x.transpose(1, 2).view(B, n_heads, T, C // n_heads)


def test_split_heads_reference_and_stub():
    assert mh.check_split_heads(split_good).passed
    assert mh.check_split_heads(split_heads).passed
    assert mh.check_split_heads(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (split_tokens, mh.HINT_SPLIT_TOKENS),
    (split_strided, mh.HINT_SPLIT_STRIDED),
    (split_no_transpose, mh.HINT_SPLIT_NO_TRANSPOSE),
    (split_view_after_transpose, "view size is not compatible"),
])
def test_split_heads_wrong(wrong, hint):
    assert_fails(mh.check_split_heads(wrong), hint)


# ---------------------------------------------------------------- merge_heads

def merge_good(x):
    B, H, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hs)


def merge_no_transpose(x):
    B, H, T, hs = x.shape
    return x.reshape(B, T, H * hs)


def merge_strided(x):
    B, H, T, hs = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * hs)


def merge_sum(x):  # adds the heads instead of concatenating them
    return x.sum(dim=1)


def merge_view(x):  # .view after transpose fails: not contiguous
    B, H, T, hs = x.shape
    return x.transpose(1, 2).view(B, T, H * hs)


def test_merge_heads_reference_and_stub():
    assert mh.check_merge_heads(merge_good).passed
    assert mh.check_merge_heads(merge_heads).passed
    assert mh.check_merge_heads(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (merge_no_transpose, mh.HINT_MERGE_NO_TRANSPOSE),
    (merge_strided, mh.HINT_MERGE_STRIDED),
    (merge_sum, mh.HINT_MERGE_SUM),
    (merge_view, "contiguous"),
])
def test_merge_heads_wrong(wrong, hint):
    assert_fails(mh.check_merge_heads(wrong), hint)


# ---------------------------------------------------------------- repeat_kv

def repeat_good(x, n_rep):
    B, H_kv, T, hs = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, T, hs).reshape(B, H_kv * n_rep, T, hs)


def repeat_tile(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)


def repeat_tile_expand(x, n_rep):  # expands on the wrong new axis: also tiles
    B, H_kv, T, hs = x.shape
    return x[:, None].expand(B, n_rep, H_kv, T, hs).reshape(B, n_rep * H_kv, T, hs)


def repeat_tokens(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2)


def repeat_forgotten(x, n_rep):
    return x


def test_repeat_kv_reference_and_stub():
    assert mh.check_repeat_kv(repeat_good).passed
    assert mh.check_repeat_kv(repeat_kv).passed
    assert mh.check_repeat_kv(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (repeat_tile, mh.HINT_REPEAT_TILE),
    (repeat_tile_expand, mh.HINT_REPEAT_TILE),
    (repeat_tokens, mh.HINT_REPEAT_TOKENS),
    (repeat_forgotten, "still has H_kv heads"),
])
def test_repeat_kv_wrong(wrong, hint):
    assert_fails(mh.check_repeat_kv(wrong), hint)


# ---------------------------------------------------------------- multi_head_attention

def mha_good(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None):
    B, T_q, C = x_q.shape
    hs = C // n_heads
    q = split_heads(x_q @ W_q, n_heads)                    # (B, H, T_q, hs)
    k = split_heads(x_kv @ W_k, W_k.shape[1] // hs)        # (B, H_kv, T_k, hs)
    v = split_heads(x_kv @ W_v, W_v.shape[1] // hs)
    n_rep = n_heads // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    attn_weights = masked_softmax(q @ k.transpose(-2, -1) / math.sqrt(hs), mask)
    return merge_heads(attn_weights @ v) @ W_o


def _mha(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None, *, split=split_heads, merge=merge_heads,
         scale=None, rep=repeat_kv, use_w_o=True, fill=None):
    """Learner-style forward built from swappable pieces, to write the wrong versions below."""
    C = x_q.shape[-1]
    hs = C // n_heads
    q, k, v = split(x_q @ W_q, n_heads), split(x_kv @ W_k, W_k.shape[1] // hs), split(x_kv @ W_v, W_v.shape[1] // hs)
    n_rep = n_heads // k.shape[1]
    k, v = rep(k, n_rep), rep(v, n_rep)
    attn_scores = q @ k.transpose(-2, -1) / math.sqrt(hs if scale is None else scale(C, hs))
    if mask is not None and fill is not None:
        attn_scores = fill(attn_scores, mask)
    elif mask is not None:
        attn_scores = attn_scores.masked_fill(~mask, float("-inf"))
    context = merge(torch.softmax(attn_scores, dim=-1) @ v)
    return context @ W_o if use_w_o else context


def mha_split_tokens(*a, **k):
    return _mha(*a, **k, split=split_tokens)


def mha_merge_no_transpose(*a, **k):
    return _mha(*a, **k, merge=merge_no_transpose)


def mha_no_w_o(*a, **k):
    return _mha(*a, **k, use_w_o=False)


def mha_scale_d_model(*a, **k):
    return _mha(*a, **k, scale=lambda C, hs: C)


def mha_repeat_tile(*a, **k):
    return _mha(*a, **k, rep=repeat_tile)


def mha_mask_inverted(*a, **k):
    return _mha(*a, **k, fill=lambda s, m: s.masked_fill(m, float("-inf")))


def mha_mask_ignored(*a, **k):
    return _mha(*a, **k, fill=lambda s, m: s)


def mha_returns_tuple(*a, **k):
    return _mha(*a, **k), None


def mha_detached_w_o(x_q, x_kv, W_q, W_k, W_v, W_o, n_heads, mask=None):
    return _mha(x_q, x_kv, W_q, W_k, W_v, W_o.detach(), n_heads, mask)


def test_multi_head_attention_reference_and_stub():
    assert mh.check_multi_head_attention(mha_good).passed
    assert mh.check_multi_head_attention(mh.reference_multi_head_attention).passed
    assert mh.check_multi_head_attention(stub).status == "not implemented"


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_check_reference_equals_tfmlib_module(n_kv_heads):
    """The check's functional reference is tfmlib's MultiHeadAttention with the weights copied in."""
    x_q, x_kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    W_q, W_k, W_v, W_o = mh._weights(16, 4, n_kv_heads)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    mha = MultiHeadAttention(16, 4, n_kv_heads=n_kv_heads, bias=False)
    with torch.no_grad():
        for lin, W in ((mha.q_proj, W_q), (mha.k_proj, W_k), (mha.v_proj, W_v), (mha.out_proj, W_o)):
            lin.weight.copy_(W.T)
    expected, _ = mha(x_q, x_kv, x_kv, mask=mask)
    torch.testing.assert_close(mh.reference_multi_head_attention(x_q, x_kv, W_q, W_k, W_v, W_o, 4, mask=mask),
                               expected, atol=1e-5, rtol=1e-5)


def test_mistake_variants_default_to_the_reference():
    x_q, x_kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    weights = mh._weights(16, 4, 2)
    mask = torch.rand(2, 1, 3, 5) > 0.3
    mask[..., 0] = True
    torch.testing.assert_close(mh._mha_variant(x_q, x_kv, *weights, 4, mask=mask),
                               mh.reference_multi_head_attention(x_q, x_kv, *weights, 4, mask=mask))


@pytest.mark.parametrize("wrong, hint", [
    (mha_split_tokens, mh.HINT_SPLIT_TOKENS),
    (mha_merge_no_transpose, mh.HINT_MERGE_NO_TRANSPOSE),
    (mha_no_w_o, mh.HINT_NO_W_O),
    (mha_scale_d_model, mh.HINT_SCALE_D_MODEL),
    (mha_repeat_tile, mh.HINT_REPEAT_TILE),
    (mha_mask_inverted, mh.HINT_MASK_INVERTED),
    (mha_mask_ignored, mh.HINT_MASK_IGNORED),
    (mha_returns_tuple, "not a tuple"),
    (mha_detached_w_o, "no gradient reaches W_o"),
])
def test_multi_head_attention_wrong(wrong, hint):
    assert_fails(mh.check_multi_head_attention(wrong), hint)


def test_wrong_split_fails_even_when_used_inside_the_forward():
    """A learner's broken split_heads makes the forward fail with the split hint."""
    result = mh.check_multi_head_attention(mha_split_tokens)
    assert "cuts the sequence" in repr(result)
