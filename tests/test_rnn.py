"""tfmlib.rnn equals PyTorch's recurrent modules, and its measurements measure what they claim."""
import pytest
import torch
import torch.nn as nn

from helpers import assert_close
from tfmlib import MultiHeadAttention
from tfmlib.rnn import (BOS, CopyTaskConfig, ScratchLSTM, ScratchRNN, Seq2SeqLSTM, copy_accuracy, copy_task_batch,
                        gradient_norms_by_distance, lstm_step, rnn_forward, rnn_step, sequential_depth,
                        time_forward, train_copy_task)


def _summed_bias(ref, suffix=""):
    return getattr(ref, "bias_ih" + suffix) + getattr(ref, "bias_hh" + suffix)


def test_rnn_step_equals_nn_rnncell_outputs_and_gradients():
    cell = nn.RNNCell(4, 6)
    x, h = torch.randn(3, 4, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    ours = rnn_step(x, h, cell.weight_ih, cell.weight_hh, _summed_bias(cell))
    ref = cell(x, h)
    assert_close(ours, ref, what="h_t")
    g = torch.randn_like(ref)
    for a, b, name in zip(torch.autograd.grad(ours, (x, h, cell.weight_hh), g, retain_graph=True),
                          torch.autograd.grad(ref, (x, h, cell.weight_hh), g), ("x", "h", "W_hh")):
        assert_close(a, b, what=f"grad {name}")


@pytest.mark.parametrize("B, T", [(2, 7), (1, 1), (3, 2)])
def test_rnn_forward_and_scratch_rnn_equal_nn_rnn(B, T):
    ref = nn.RNN(5, 4, batch_first=True)
    x, h0 = torch.randn(B, T, 5), torch.randn(B, 4)
    want_out, want_h = ref(x, h0[None])  # nn.RNN takes h0 as (layers, B, Hd)
    out, h_T = rnn_forward(x, h0, ref.weight_ih_l0, ref.weight_hh_l0, _summed_bias(ref, "_l0"))
    assert out.shape == (B, T, 4) and h_T.shape == (B, 4)
    assert_close(out, want_out, what="outputs")
    assert_close(h_T, want_h[0], what="h_T")
    mine = ScratchRNN(5, 4).load_from_torch(ref)
    assert_close(mine(x, h0)[0], want_out, what="ScratchRNN outputs")
    assert_close(mine(x)[0], ref(x)[0], what="ScratchRNN outputs from a zero state")


def test_lstm_step_equals_nn_lstmcell_outputs_and_gradients():
    cell = nn.LSTMCell(3, 5)
    x = torch.randn(2, 3, requires_grad=True)
    h, c = torch.randn(2, 5, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    h_t, c_t = lstm_step(x, h, c, cell.weight_ih, cell.weight_hh, _summed_bias(cell))
    want_h, want_c = cell(x, (h, c))
    assert_close(h_t, want_h, what="h_t")
    assert_close(c_t, want_c, what="c_t")
    g = torch.randn_like(want_h)
    ours = torch.autograd.grad((h_t * g).sum() + c_t.sum(), (x, h, c, cell.weight_ih))
    theirs = torch.autograd.grad((want_h * g).sum() + want_c.sum(), (x, h, c, cell.weight_ih))
    for a, b, name in zip(ours, theirs, ("x", "h", "c", "W_ih")):
        assert_close(a, b, what=f"grad {name}")


def test_scratch_lstm_equals_nn_lstm_and_lstmcell():
    ref = nn.LSTM(4, 6, batch_first=True)
    x = torch.randn(2, 9, 4, requires_grad=True)
    mine = ScratchLSTM(4, 6).load_from_torch(ref)
    out, (h, c) = mine(x)
    want_out, (want_h, want_c) = ref(x)
    assert_close(out, want_out, what="outputs")
    assert_close(h, want_h[0], what="h_T")
    assert_close(c, want_c[0], what="c_T")
    g = torch.randn_like(out)
    assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(want_out, x, g)[0], what="grad x")
    cell = nn.LSTMCell(4, 6)
    one = ScratchLSTM(4, 6).load_from_torch(cell)
    assert_close(one(x[:, :1])[0][:, 0], cell(x[:, 0])[0], what="one step vs LSTMCell")


def test_forget_bias_shifts_only_the_forget_gate():
    torch.manual_seed(0)
    plain = ScratchLSTM(3, 4)
    torch.manual_seed(0)
    shifted = ScratchLSTM(3, 4, forget_bias=2.0)
    diff = shifted.bias - plain.bias
    assert torch.allclose(diff, torch.tensor([0.0] * 4 + [2.0] * 4 + [0.0] * 8))


def test_sequential_depth_grows_with_length_for_rnns_not_for_attention():
    depths = {}
    for T in (4, 8, 16):
        x = torch.randn(1, T, 8, requires_grad=True)
        depths[T] = (sequential_depth(ScratchRNN(8, 8)(x)[0]), sequential_depth(ScratchLSTM(8, 8)(x)[0]),
                     sequential_depth(MultiHeadAttention(8, 2)(x)[0]))
    rnn_per_step = (depths[16][0] - depths[8][0]) / 8
    assert rnn_per_step == (depths[8][0] - depths[4][0]) / 4 and rnn_per_step >= 3  # linear in T
    assert depths[16][1] - depths[8][1] == 2 * (depths[8][1] - depths[4][1]) > 0
    assert depths[4][2] == depths[8][2] == depths[16][2]  # attention: constant


def test_sequential_depth_of_a_chain_and_bad_input():
    x = torch.randn(3, requires_grad=True)
    y = x
    for _ in range(5):
        y = y * 2
    assert sequential_depth(y) == 6  # five MulBackward nodes + the leaf's AccumulateGrad
    with pytest.raises(ValueError, match="no autograd history"):
        sequential_depth(torch.randn(3))


def test_gradient_norms_by_distance_matches_a_hand_computed_linear_case():
    class Scale(nn.Module):  # out_t = sum_{s<=t} 0.5^(t-s) x_s  (a linear recurrence)
        def forward(self, x):
            h, outs = torch.zeros_like(x[:, 0]), []
            for t in range(x.shape[1]):
                h = 0.5 * h + x[:, t]
                outs.append(h)
            return torch.stack(outs, 1)
    C = 4
    norms = gradient_norms_by_distance(Scale(), torch.randn(2, 6, C))
    expected = torch.tensor([0.5 ** d * C ** 0.5 for d in range(6)])
    assert_close(norms, expected, what="norms")


def test_vanilla_rnn_vanishes_and_explodes_lstm_with_open_forget_gate_carries():
    torch.manual_seed(0)
    x = torch.randn(4, 60, 8)
    rnn = gradient_norms_by_distance(ScratchRNN(8, 32), x)
    exploding = gradient_norms_by_distance(ScratchRNN(8, 32, recurrent_gain=2.5), x)
    lstm = gradient_norms_by_distance(ScratchLSTM(8, 32, forget_bias=3.0), x)
    assert rnn[59] / rnn[0] < 1e-6
    assert exploding[59] / exploding[0] > 10
    assert lstm[59] / lstm[0] > 1e-3


def test_time_forward_returns_positive_seconds():
    assert 0 < time_forward(nn.Linear(4, 4), torch.randn(2, 4), repeats=2) < 5


def test_step_functions_reject_bad_shapes():
    W_xh, W_hh, b = torch.randn(5, 3), torch.randn(5, 5), torch.randn(5)
    with pytest.raises(ValueError, match=r"W_xh must have shape \(5, 4\) for C=4, Hd=5, got \(5, 3\)"):
        rnn_step(torch.randn(2, 4), torch.randn(2, 5), W_xh, W_hh, b)
    with pytest.raises(ValueError, match="share the batch size"):
        rnn_step(torch.randn(2, 3), torch.randn(3, 5), W_xh, W_hh, b)
    with pytest.raises(ValueError, match=r"x_t must have 2 dimensions, got shape \(2, 1, 3\)"):
        rnn_step(torch.randn(2, 1, 3), torch.randn(2, 5), W_xh, W_hh, b)
    with pytest.raises(ValueError, match=r"W_ih must have shape \(20, 3\)"):
        lstm_step(torch.randn(2, 3), torch.randn(2, 5), torch.randn(2, 5), W_xh, torch.randn(20, 5), torch.randn(20))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        ScratchRNN(3, 5)(torch.randn(4, 3))
    with pytest.raises(TypeError, match="src must be an integer tensor"):
        Seq2SeqLSTM(10, 4, 8, attention=False).encode(torch.randn(2, 3))


def test_copy_task_config_validates():
    with pytest.raises(ValueError, match="min_len <= max_len"):
        CopyTaskConfig(min_len=5, max_len=3)
    with pytest.raises(ValueError, match="vocab_size must be >= 3"):
        CopyTaskConfig(vocab_size=2)


def test_copy_task_batch_is_teacher_forcing_of_the_source():
    src, tgt_in, tgt_out = copy_task_batch(3, 5, 10, torch.Generator().manual_seed(0))
    assert src.shape == tgt_in.shape == tgt_out.shape == (3, 5)
    assert torch.equal(tgt_out, src) and (src >= 1).all() and (src < 10).all()
    assert (tgt_in[:, 0] == BOS).all() and torch.equal(tgt_in[:, 1:], src[:, :-1])


@pytest.mark.parametrize("attention", [False, True])
def test_seq2seq_shapes_and_attention_rows_sum_to_one(attention):
    model = Seq2SeqLSTM(12, 8, 16, attention=attention)
    src, tgt_in, _ = copy_task_batch(2, 7, 12)
    assert model(src, tgt_in).shape == (2, 7, 12)
    tokens, weights = model.generate(src, 7)
    assert tokens.shape == (2, 7)
    if attention:
        assert weights.shape == (2, 7, 7)
        assert_close(weights.sum(-1), torch.ones(2, 7), what="row sums")
    else:
        assert weights is None


def test_generate_equals_teacher_forced_decoding_of_its_own_output():
    model = Seq2SeqLSTM(9, 8, 16, attention=True).eval()
    src, _, _ = copy_task_batch(3, 6, 9)
    tokens, _ = model.generate(src, 6)
    tgt_in = torch.cat([torch.full((3, 1), BOS), tokens[:, :-1]], dim=1)
    assert torch.equal(model(src, tgt_in).argmax(-1), tokens)  # step-by-step == all at once


def test_training_learns_short_copies_and_is_deterministic():
    cfg = CopyTaskConfig(vocab_size=6, d_embed=8, d_hidden=32, min_len=2, max_len=3, steps=120, batch_size=32, lr=0.02)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Seq2SeqLSTM(cfg.vocab_size, cfg.d_embed, cfg.d_hidden, attention=True)
        losses = train_copy_task(model, cfg, seed=0)
        results.append((losses[-1], copy_accuracy(model, 3, cfg.vocab_size)))
    assert results[0] == results[1]
    assert results[0][1] > 0.9
