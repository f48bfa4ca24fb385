"""The lesson-01 checks accept the reference, reject realistic wrong implementations with the right hint,
and report a stub as not implemented."""
import pytest
import torch

from helpers import stub
from tfmlib import rnn
from tfmlib.checks.rnn import check_lstm_step, check_rnn_forward, check_rnn_step


# ---------------------------------------------------------------- rnn_step

def step_no_tanh(x, h, W_xh, W_hh, b):
    return x @ W_xh.T + h @ W_hh.T + b


def step_forgets_h(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + b)


def step_sigmoid(x, h, W_xh, W_hh, b):
    return torch.sigmoid(x @ W_xh.T + h @ W_hh.T + b)


def step_no_bias(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + h @ W_hh.T)


def step_no_transpose(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh + h @ W_hh + b)  # runs only when the weights are square


def step_detached(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + h.detach() @ W_hh.T + b)


def step_wrong_matmul(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh + h @ W_hh.T + b)  # (B, C) @ (Hd, C) fails when C != Hd


@pytest.mark.parametrize("wrong, hint", [
    (step_no_tanh, "apply tanh"),
    (step_forgets_h, "depend on the previous one"),
    (step_sigmoid, "not sigmoid"),
    (step_no_bias, "forget the bias"),
    (step_no_transpose, "(out, in)"),
    (step_detached, "avoid .detach()"),
    (step_wrong_matmul, None),
])
def test_rnn_step_rejects_mistakes(wrong, hint):
    result = check_rnn_step(wrong)
    assert result.status == "failed", repr(result)
    if hint:
        assert hint in repr(result), repr(result)
    assert "Traceback" not in repr(result)


def test_rnn_step_accepts_reference_and_nn_rnncell_formula():
    assert check_rnn_step(rnn.rnn_step).passed
    assert "passed (4 cases)" in repr(check_rnn_step(rnn.rnn_step))


def test_rnn_step_stub_is_not_implemented():
    result = check_rnn_step(stub)
    assert result.status == "not implemented"
    assert "not implemented yet" in repr(result)


# ---------------------------------------------------------------- rnn_forward

def fwd_stale_state(x, h0, W_xh, W_hh, b):
    outputs = [rnn.rnn_step(x[:, t], h0, W_xh, W_hh, b) for t in range(x.shape[1])]
    return torch.stack(outputs, 1), outputs[-1]


def fwd_reversed(x, h0, W_xh, W_hh, b):
    outputs, h = rnn.rnn_forward(x, h0, W_xh, W_hh, b)
    return outputs.flip(1), h


def fwd_store_before_step(x, h0, W_xh, W_hh, b):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        outputs.append(h)
        h = rnn.rnn_step(x[:, t], h, W_xh, W_hh, b)
    return torch.stack(outputs, 1), h


def fwd_returns_h0(x, h0, W_xh, W_hh, b):
    outputs, _ = rnn.rnn_forward(x, h0, W_xh, W_hh, b)
    return outputs, h0


def fwd_from_zeros(x, h0, W_xh, W_hh, b):
    return rnn.rnn_forward(x, torch.zeros_like(h0), W_xh, W_hh, b)


def fwd_only_outputs(x, h0, W_xh, W_hh, b):
    return rnn.rnn_forward(x, h0, W_xh, W_hh, b)[0]


def fwd_batch_axis(x, h0, W_xh, W_hh, b):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = rnn.rnn_step(x[t], h, W_xh, W_hh, b)  # wrong axis; runs only when B == T
        outputs.append(h)
    return torch.stack(outputs, 1), h


def fwd_detached(x, h0, W_xh, W_hh, b):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = rnn.rnn_step(x[:, t], h, W_xh, W_hh, b).detach()
        outputs.append(h)
    return torch.stack(outputs, 1), h


@pytest.mark.parametrize("wrong, hint", [
    (fwd_stale_state, "carry the state"),
    (fwd_reversed, "reverse order"),
    (fwd_store_before_step, "AFTER reading"),
    (fwd_returns_h0, "not the initial h0"),
    (fwd_from_zeros, "not from zeros"),
    (fwd_only_outputs, "return outputs, h_T"),
    (fwd_batch_axis, None),
    (fwd_detached, "avoid .detach()"),
])
def test_rnn_forward_rejects_mistakes(wrong, hint):
    result = check_rnn_forward(wrong)
    assert result.status == "failed", repr(result)
    if hint:
        assert hint in repr(result), repr(result)


def test_rnn_forward_batch_axis_hint_on_square_case():
    # B != T raises (hint about shapes) or differs; on B == T the specific hint appears
    x, h0 = torch.randn(3, 3, 3), torch.randn(3, 3)
    from tfmlib.checks.rnn import _rnn_forward_mistakes
    out_mistakes, _ = _rnn_forward_mistakes(x, h0, torch.randn(3, 3), torch.randn(3, 3), torch.randn(3))
    assert any("time is dim 1" in k for k in out_mistakes)


def test_rnn_forward_accepts_reference_and_stub_is_not_implemented():
    assert check_rnn_forward(rnn.rnn_forward).passed
    assert check_rnn_forward(stub).status == "not implemented"


def test_rnn_forward_using_a_stub_step_is_not_implemented():
    def learner_forward(x, h0, W_xh, W_hh, b):
        h = h0
        for t in range(x.shape[1]):
            h = stub(x[:, t], h, W_xh, W_hh, b)
        return h, h
    assert check_rnn_forward(learner_forward).status == "not implemented"


# ---------------------------------------------------------------- lstm_step

def _gates(x, h, W_ih, W_hh, b):
    return (x @ W_ih.T + h @ W_hh.T + b).chunk(4, dim=-1)


def lstm_order_ifog(x, h, c, W_ih, W_hh, b):
    i, f, o, g = _gates(x, h, W_ih, W_hh, b)
    c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t


def lstm_no_forget(x, h, c, W_ih, W_hh, b):
    i, f, g, o = _gates(x, h, W_ih, W_hh, b)
    c_t = torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t


def lstm_h_without_tanh(x, h, c, W_ih, W_hh, b):
    i, f, g, o = _gates(x, h, W_ih, W_hh, b)
    c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * c_t, c_t


def lstm_returns_c_h(x, h, c, W_ih, W_hh, b):
    h_t, c_t = rnn.lstm_step(x, h, c, W_ih, W_hh, b)
    return c_t, h_t


def lstm_sigmoid_candidate(x, h, c, W_ih, W_hh, b):
    i, f, g, o = _gates(x, h, W_ih, W_hh, b)
    c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.sigmoid(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t


def lstm_order_fi(x, h, c, W_ih, W_hh, b):
    f, i, g, o = _gates(x, h, W_ih, W_hh, b)
    c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t


def lstm_uses_c_for_gates(x, h, c, W_ih, W_hh, b):
    i, f, g, o = _gates(x, c, W_ih, W_hh, b)  # gates read the cell state instead of h
    c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t


def lstm_detached_cell(x, h, c, W_ih, W_hh, b):
    return rnn.lstm_step(x, h, c.detach(), W_ih, W_hh, b)


@pytest.mark.parametrize("wrong, hint", [
    (lstm_order_ifog, "order i, f, o, g"),
    (lstm_order_fi, "order f, i, g, o"),
    (lstm_no_forget, "keep the old memory"),
    (lstm_h_without_tanh, "goes through tanh first"),
    (lstm_returns_c_h, "swapped"),
    (lstm_sigmoid_candidate, "tanh, not sigmoid"),
    (lstm_uses_c_for_gates, None),
    (lstm_detached_cell, "avoid .detach()"),
])
def test_lstm_step_rejects_mistakes(wrong, hint):
    result = check_lstm_step(wrong)
    assert result.status == "failed", repr(result)
    if hint:
        assert hint in repr(result), repr(result)


def test_lstm_step_accepts_reference_and_stub_is_not_implemented():
    assert check_lstm_step(rnn.lstm_step).passed
    assert check_lstm_step(stub).status == "not implemented"


def test_checks_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    check_lstm_step(rnn.lstm_step)
    assert torch.equal(torch.rand(1), before)
