"""LayerNorm, encoder/decoder layers and the full Transformer equal PyTorch's modules,
outputs and gradients, with weights copied across."""
import copy

import pytest
import torch
import torch.nn as nn

from helpers import assert_close
from tfmlib import (Decoder, DecoderBlock, Encoder, EncoderBlock, FeedForward, LayerNorm, layer_norm,
                    ResidualSublayer, Transformer, causal_mask, padding_mask)
from tfmlib.interop import (copy_decoder_layer_from_torch, copy_encoder_layer_from_torch,
                            copy_layernorm_from_torch, copy_transformer_from_torch)

C, H, FF = 16, 4, 32


def _compare_param_grads(mine: nn.Module, ref: nn.Module, copy_fn, atol=1e-5, rtol=1e-4):
    """Map the reference's gradients through the same copy function used for the weights,
    then compare them with tfmlib's gradients parameter by parameter."""
    ref_grads = copy.deepcopy(ref)
    with torch.no_grad():
        for p, src in zip(ref_grads.parameters(), ref.parameters()):
            p.copy_(src.grad)
    expected = copy.deepcopy(mine)
    copy_fn(expected, ref_grads)
    n = 0
    for (name, p), q in zip(mine.named_parameters(), expected.parameters()):
        assert p.grad is not None, f"{name} got no gradient"
        assert_close(p.grad, q, atol=atol, rtol=rtol, what=f"grad of {name}")
        n += 1
    # each MultiheadAttention packs 3 weights and 3 biases in 2 tensors: tfmlib has 4 more
    assert n == len(list(ref.parameters())) + sum(4 for m in ref.modules() if isinstance(m, nn.MultiheadAttention))


def test_layernorm_matches_nn_layernorm():
    ref = nn.LayerNorm(C)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    mine = LayerNorm(C)
    copy_layernorm_from_torch(mine, ref)
    x = (torch.randn(3, 5, C) * 3 + 1).requires_grad_()
    a, b = mine(x), ref(x)
    assert_close(a, b, what="LayerNorm output")
    g = torch.randn_like(a)
    (ga,) = torch.autograd.grad(a, x, g, retain_graph=True)
    (gb,) = torch.autograd.grad(b, x, g, retain_graph=True)
    assert_close(ga, gb, what="LayerNorm input grad")
    a.backward(g)
    b.backward(g)
    assert_close(mine.weight.grad, ref.weight.grad, what="weight grad")
    assert_close(mine.bias.grad, ref.bias.grad, what="bias grad")


def test_written_out_layer_norm_equals_nn_layernorm_outputs_and_gradients():
    ref = nn.LayerNorm(C)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    w, b = ref.weight.detach().clone().requires_grad_(), ref.bias.detach().clone().requires_grad_()
    x = (torch.randn(3, 5, C) * 3 + 1).requires_grad_()
    mine, expected = layer_norm(x, w, b, eps=1e-5), ref(x)
    assert_close(mine, expected, what="written-out layer_norm")
    g = torch.randn_like(mine)
    for a, e, name in zip(torch.autograd.grad(mine, (x, w, b), g), torch.autograd.grad(expected, (x, ref.weight, ref.bias), g),
                          ("x", "weight", "bias")):
        assert_close(a, e, what=f"grad of {name}")


def test_layernorm_uses_biased_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    y = LayerNorm(4, eps=0.0)(x)
    assert_close(y.pow(2).mean(-1), torch.ones(1), what="unit variance with 1/C")


def test_residual_sublayer_pre_and_post():
    x = torch.randn(2, 3, C)
    ffn = FeedForward(C, FF)
    pre, post = ResidualSublayer(C, norm_first=True), ResidualSublayer(C, norm_first=False)
    assert_close(pre(x, ffn), x + ffn(pre.norm(x)), what="pre-LN")
    assert_close(post(x, ffn), post.norm(x + ffn(x)), what="post-LN")


def _inputs(B=3, T=5, S=7):
    src = torch.randn(B, S, C, requires_grad=True)
    tgt = torch.randn(B, T, C, requires_grad=True)
    src_pad = torch.zeros(B, S, dtype=torch.bool)  # PyTorch: True = padding
    src_pad[0, -3:] = True
    src_pad[1, -1] = True
    tgt_pad = torch.zeros(B, T, dtype=torch.bool)
    tgt_pad[2, -2:] = True
    return src, tgt, src_pad, tgt_pad


def _check_backward(out_a, out_b, inputs, mine, ref, copy_fn):
    g = torch.randn_like(out_a)
    for a, b in zip(torch.autograd.grad(out_a, inputs, g, retain_graph=True),
                    torch.autograd.grad(out_b, inputs, g, retain_graph=True)):
        assert_close(a, b, atol=1e-5, rtol=1e-4, what="input gradient")
    out_a.backward(g)
    out_b.backward(g)
    _compare_param_grads(mine, ref, copy_fn)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_nn(norm_first, activation):
    ref = nn.TransformerEncoderLayer(C, H, FF, dropout=0.0, activation=activation,
                                     batch_first=True, norm_first=norm_first)
    mine = EncoderBlock(C, H, FF, dropout=0.0, norm_first=norm_first, activation=activation)
    copy_encoder_layer_from_torch(mine, ref)
    src, _, src_pad, _ = _inputs()
    a = mine(src, mask=(~src_pad)[:, None, None, :])
    b = ref(src, src_key_padding_mask=src_pad)
    assert_close(a, b, what="encoder layer output")
    _check_backward(a, b, (src,), mine, ref, copy_encoder_layer_from_torch)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_causal_matches_nn(norm_first):
    ref = nn.TransformerEncoderLayer(C, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    mine = EncoderBlock(C, H, FF, dropout=0.0, norm_first=norm_first)
    copy_encoder_layer_from_torch(mine, ref)
    x = torch.randn(2, 6, C)
    a = mine(x, is_causal=True)
    b = ref(x, src_mask=nn.Transformer.generate_square_subsequent_mask(6), is_causal=True)
    assert_close(a, b, what="causal encoder layer (a GPT block)")


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_nn(norm_first):
    ref = nn.TransformerDecoderLayer(C, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    mine = DecoderBlock(C, H, FF, dropout=0.0, norm_first=norm_first)
    copy_decoder_layer_from_torch(mine, ref)
    src, tgt, src_pad, tgt_pad = _inputs()
    T = tgt.shape[1]
    a = mine(tgt, src, tgt_mask=(~tgt_pad)[:, None, None, :], memory_mask=(~src_pad)[:, None, None, :])
    b = ref(tgt, src, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
            tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True)
    assert_close(a, b, what="decoder layer output")
    _check_backward(a, b, (tgt, src), mine, ref, copy_decoder_layer_from_torch)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_nn_transformer(norm_first):
    ref = nn.Transformer(C, H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF,
                         dropout=0.0, batch_first=True, norm_first=norm_first)
    mine = Transformer(C, H, 2, 2, FF, dropout=0.0, norm_first=norm_first)
    copy_transformer_from_torch(mine, ref)
    src, tgt, src_pad, tgt_pad = _inputs()
    T = tgt.shape[1]
    src_keys = (~src_pad)[:, None, None, :]
    a = mine(src, tgt, src_mask=src_keys, tgt_mask=(~tgt_pad)[:, None, None, :], memory_mask=src_keys)
    b = ref(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
            src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
            tgt_is_causal=True)
    assert_close(a, b, atol=1e-5, rtol=1e-4, what="nn.Transformer output")
    _check_backward(a, b, (src, tgt), mine, ref, copy_transformer_from_torch)


def test_stacks_have_final_norm_and_layers():
    enc = Encoder(3, C, H, FF)
    dec = Decoder(2, C, H, FF)
    assert len(enc.layers) == 3 and isinstance(enc.norm, LayerNorm)
    x, m = torch.randn(2, 4, C), torch.randn(2, 6, C)
    assert dec(x, enc(m)).shape == (2, 4, C)


def test_decoder_is_causal_future_tokens_do_not_change_the_past():
    dec = DecoderBlock(C, H, FF).eval()
    mem = torch.randn(1, 6, C)
    x = torch.randn(1, 5, C)
    y1 = dec(x, mem)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(1, 2, C)
    y2 = dec(x2, mem)
    assert_close(y1[:, :3], y2[:, :3], what="positions before the change")
    assert not torch.allclose(y1[:, 3:], y2[:, 3:])
