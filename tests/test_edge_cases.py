"""Edge cases that real use hits (issue 10): a query with nothing to attend to, ignored rows that
hold NaN or -inf, length guards at the exact boundary, exact resume, numerics at the knobs' edges."""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close
from tfmlib import (GPT, GPTConfig, MultiHeadAttention, Seq2SeqTransformer, TransformerConfig, causal_mask,
                    masked_softmax, padding_mask, record_attention, scaled_dot_product_attention)
from tfmlib.losses import Seq2SeqLoss

# ---------------------------------------------------------------- 1. a query with nothing to attend to
ALL_MASKED = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])  # row 2: no key


def test_masked_softmax_gives_zeros_for_a_row_with_no_key():
    scores = torch.randn(3, 3)
    weights = masked_softmax(scores, ALL_MASKED)
    assert torch.equal(weights[1], torch.zeros(3))
    assert_close(weights[[0, 2]].sum(-1), torch.ones(2), what="rows with keys still sum to 1")
    # scores that are -inf by themselves (no mask) are a row with nothing to attend to as well
    assert torch.equal(masked_softmax(torch.full((2, 4), float("-inf"))), torch.zeros(2, 4))


@pytest.mark.parametrize("mask", [ALL_MASKED, padding_mask(torch.tensor([[5, 6, 7], [0, 0, 0]])),
                                  padding_mask(torch.tensor([[5, 6, 0], [0, 0, 0]])) & causal_mask(3)],
                         ids=["explicit", "padding-row", "padding-and-causal"])
def test_sdpa_all_masked_rows_equal_pytorch_outputs_and_gradients(mask):
    q, k, v = (torch.randn(2, 2, 3, 4, requires_grad=True) for _ in range(3))
    ours, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(ours).all() and torch.isfinite(weights).all()
    assert_close(ours, ref, what="context")
    g = torch.randn_like(ref)
    for a, b, name in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), "qkv"):
        assert torch.isfinite(a).all(), f"grad {name} is not finite"
        assert_close(a, b, what=f"grad {name}")


@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_mha_same_numbers_with_or_without_weights(n_kv_heads):
    mha = MultiHeadAttention(8, 2, n_kv_heads).eval()
    x = torch.randn(2, 3, 8)
    mask = padding_mask(torch.tensor([[5, 6, 7], [0, 0, 0]]))
    fused, none = mha(x, mask=mask)
    written, weights = mha(x, mask=mask, need_weights=True)
    assert none is None and torch.isfinite(written).all()
    assert_close(written, fused, what="need_weights=True vs fused")
    assert torch.equal(weights[1], torch.zeros_like(weights[1]))
    # the row with no key gives a zero context, so its output is the output projection's bias
    assert_close(fused[1], mha.out_proj.bias.expand(3, 8), what="empty row -> out_proj(0)")


def test_seq2seq_with_an_all_padding_source_is_finite_on_every_path():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(TransformerConfig.preset("tiny", src_vocab_size=10, tgt_vocab_size=10, dropout=0.0))
    src = torch.tensor([[5, 6, 7], [0, 0, 0]])
    tgt = torch.tensor([[4, 5, 2], [4, 5, 2]])
    loss_fn = Seq2SeqLoss()
    model.eval()
    logits = model(src, tgt)
    with record_attention(model):
        recorded = model(src, tgt)
        loss_recorded = loss_fn(model, (src, tgt))
    assert torch.isfinite(logits).all()
    assert_close(recorded, logits, what="logits with weights recorded")
    assert_close(loss_recorded, loss_fn(model, (src, tgt)), what="loss with weights recorded")
    model.train()  # training mode (dropout 0): the loss and its gradient stay finite on both paths
    for record in (False, True):
        model.zero_grad()
        if record:
            with record_attention(model):
                loss = loss_fn(model, (src, tgt))
        else:
            loss = loss_fn(model, (src, tgt))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
