"""Checks for lesson 01 (why not RNNs): one RNN step, the loop over time, one LSTM step.

Each check compares the learner's function with ``tfmlib.rnn`` on random inputs and edge cases
(a batch of one, T = 1, input width != hidden width, a square case that exposes missing transposes)
and names the usual mistake when the output matches it.

Shape legend: B batch, T time steps, C input width, Hd hidden width.
"""
from __future__ import annotations

import torch

from .. import rnn as ref
from .core import CheckFailed, call, check, expect_close, grad_of

__all__ = ["check_rnn_step", "check_rnn_forward", "check_lstm_step"]


def _weights(C: int, Hd: int, n_gates: int = 1):
    return (torch.randn(n_gates * Hd, C) * 0.5, torch.randn(n_gates * Hd, Hd) * 0.5, torch.randn(n_gates * Hd) * 0.5)


def _pair(result, what: str, names: str):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        got = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        raise CheckFailed(f"{what}: expected a pair {names}, got {got}", f"end your function with `return {names[1:-1]}`.")
    return result


# ---------------------------------------------------------------- RNN step

def _rnn_step_mistakes(x, h, W_xh, W_hh, b) -> dict:
    pre = x @ W_xh.T + h @ W_hh.T + b
    wrong = {
        "apply tanh to the sum: h_t = tanh(x_t W_xh^T + h_prev W_hh^T + b).": pre,
        "the new state must depend on the previous one: add h_prev @ W_hh.T.": torch.tanh(x @ W_xh.T + b),
        "did you forget the bias b?": torch.tanh(x @ W_xh.T + h @ W_hh.T),
        "the vanilla RNN squashes with tanh, not sigmoid (sigmoid is for gates).": torch.sigmoid(pre),
        "the vanilla RNN squashes with tanh, not ReLU.": torch.relu(pre),
    }
    if W_xh.shape[0] == W_xh.shape[1]:  # only a square case lets a missing transpose run
        wrong["PyTorch stores weights as (out, in): multiply by W_xh.T and W_hh.T, not W_xh and W_hh."] = \
            torch.tanh(x @ W_xh + h @ W_hh + b)
    return wrong


@check("rnn_step")
def check_rnn_step(fn):
    """fn(x_t (B, C), h_prev (B, Hd), W_xh (Hd, C), W_hh (Hd, Hd), b (Hd,)) -> h_t (B, Hd)."""
    cases = 0
    for B, C, Hd in ((2, 4, 4), (3, 4, 5), (1, 6, 2)):  # square first: exposes W vs W.T
        x, h = torch.randn(B, C), torch.randn(B, Hd)
        W_xh, W_hh, b = _weights(C, Hd)
        expect_close(call(fn, x, h, W_xh, W_hh, b), ref.rnn_step(x, h, W_xh, W_hh, b),
                     f"h_t for B={B}, C={C}, Hd={Hd}", mistakes=_rnn_step_mistakes(x, h, W_xh, W_hh, b))
        cases += 1
    mine = grad_of(lambda h_: fn(x, h_, W_xh, W_hh, b), h)
    theirs = grad_of(lambda h_: ref.rnn_step(x, h_, W_xh, W_hh, b), h)
    if mine[0] is None:
        raise CheckFailed("no gradient reaches h_prev", "h_t must be computed from h_prev with torch operations (no .detach()).")
    expect_close(mine[0], theirs[0], "gradient with respect to h_prev")
    return cases + 1


# ---------------------------------------------------------------- RNN over time

def _rnn_forward_mistakes(x, h0, W_xh, W_hh, b) -> tuple[dict, dict]:
    outputs, h_T = ref.rnn_forward(x, h0, W_xh, W_hh, b)
    B, T = x.shape[:2]
    stale = torch.stack([ref.rnn_step(x[:, t], h0, W_xh, W_hh, b) for t in range(T)], dim=1)
    shifted = torch.cat([h0[:, None], outputs[:, :-1]], dim=1)  # (B, T, Hd): h_0 .. h_{T-1}
    from_zeros = ref.rnn_forward(x, torch.zeros_like(h0), W_xh, W_hh, b)
    out_mistakes = {
        "carry the state: feed the h you just computed into the next step (h = rnn_step(x[:, t], h, ...)).": stale,
        "start from the given h0, not from zeros.": from_zeros[0],
        "outputs[:, t] is the state AFTER reading x[:, t] (h_1 .. h_T), not the one before it (h_0 .. h_{T-1}).": shifted,
    }
    last_mistakes = {"return the state after the last step, not the initial h0.": h0,
                     "start from the given h0, not from zeros.": from_zeros[1]}
    if T > 1:
        out_mistakes["the outputs come out in reverse order: append in time order, t = 0 .. T-1."] = outputs.flip(1)
        last_mistakes["return the state after the LAST step (outputs[:, -1]), not the first."] = outputs[:, 0]
    if B == T:  # x[t] then has the shape of a time step, but it is sample t
        out_mistakes["x[t] is sample t; the time step t is x[:, t] (time is dim 1)."] = \
            ref.rnn_forward(x.transpose(0, 1), h0, W_xh, W_hh, b)[0]
    return out_mistakes, last_mistakes


@check("rnn_forward")
def check_rnn_forward(fn):
    """fn(x (B, T, C), h0 (B, Hd), W_xh, W_hh, b) -> (outputs (B, T, Hd), h_T (B, Hd))."""
    cases = 0
    for B, T, C, Hd in ((2, 5, 3, 4), (1, 4, 2, 3), (3, 1, 4, 2), (3, 3, 3, 3)):
        x, h0 = torch.randn(B, T, C), torch.randn(B, Hd)
        W_xh, W_hh, b = _weights(C, Hd)
        outputs, h_T = _pair(call(fn, x, h0, W_xh, W_hh, b), f"result for B={B}, T={T}", "(outputs, h_T)")
        want_out, want_last = ref.rnn_forward(x, h0, W_xh, W_hh, b)
        out_mistakes, last_mistakes = _rnn_forward_mistakes(x, h0, W_xh, W_hh, b)
        expect_close(outputs, want_out, f"outputs for B={B}, T={T}, C={C}, Hd={Hd}", mistakes=out_mistakes,
                     hint="outputs[:, t] must be the hidden state after reading x[:, t].")
        expect_close(h_T, want_last, f"h_T for B={B}, T={T}", mistakes=last_mistakes)
        cases += 1
    x, h0 = torch.randn(2, 4, 3), torch.randn(2, 5)
    W_xh, W_hh, b = _weights(3, 5)
    mine = grad_of(lambda h_: fn(x, h_, W_xh, W_hh, b)[1], h0)[0]
    if mine is None:
        raise CheckFailed("no gradient reaches h0 from h_T", "build every state from the previous one with torch operations (no .detach()).")
    expect_close(mine, grad_of(lambda h_: ref.rnn_forward(x, h_, W_xh, W_hh, b)[1], h0)[0],
                 "gradient of h_T with respect to h0")
    return cases + 1


# ---------------------------------------------------------------- LSTM step

def _lstm_variant(x, h, c, W_ih, W_hh, b, order=(0, 1, 2, 3), act_g=torch.tanh, act_f=torch.sigmoid,
                  forget=True, tanh_out=True):
    gates = (x @ W_ih.T + h @ W_hh.T + b).chunk(4, dim=-1)
    i, f, g, o = (gates[k] for k in order)
    c_t = (act_f(f) * c if forget else 0) + torch.sigmoid(i) * act_g(g)
    h_t = torch.sigmoid(o) * (torch.tanh(c_t) if tanh_out else c_t)
    return h_t, c_t


def _lstm_mistakes(args) -> tuple[dict, dict]:
    names = "ifgo"
    variants = {f"PyTorch's gate order is i, f, g, o (input, forget, candidate, output); your output matches "
                f"the order {', '.join(names[k] for k in order)}.": _lstm_variant(*args, order=order)
                for order in ((0, 1, 3, 2), (1, 0, 2, 3), (0, 2, 1, 3), (3, 1, 2, 0), (0, 3, 2, 1))}
    variants.update({
        "the candidate g goes through tanh, not sigmoid (it can be negative).": _lstm_variant(*args, act_g=torch.sigmoid),
        "the forget gate needs a sigmoid too: c_t = sigmoid(f) * c_prev + ...": _lstm_variant(*args, act_f=torch.tanh),
        "keep the old memory: c_t = sigmoid(f) * c_prev + sigmoid(i) * tanh(g).": _lstm_variant(*args, forget=False),
        "h_t = sigmoid(o) * tanh(c_t): the cell state goes through tanh first.": _lstm_variant(*args, tanh_out=False),
    })
    h_mistakes = {hint: h_t for hint, (h_t, _) in variants.items()}
    c_mistakes = {hint: c_t for hint, (_, c_t) in variants.items()}
    h_ref, c_ref = ref.lstm_step(*args)
    swapped = "return (h_t, c_t) in that order: the hidden state and the cell state are swapped."
    h_mistakes[swapped], c_mistakes[swapped] = c_ref, h_ref
    return h_mistakes, c_mistakes


@check("lstm_step")
def check_lstm_step(fn):
    """fn(x_t (B, C), h_prev (B, Hd), c_prev (B, Hd), W_ih (4 Hd, C), W_hh (4 Hd, Hd), b (4 Hd,)) -> (h_t, c_t)."""
    cases = 0
    for B, C, Hd in ((3, 4, 5), (1, 2, 3), (2, 6, 2)):
        args = (torch.randn(B, C), torch.randn(B, Hd), torch.randn(B, Hd) * 2, *_weights(C, Hd, n_gates=4))
        h_t, c_t = _pair(call(fn, *args), f"result for B={B}, C={C}, Hd={Hd}", "(h_t, c_t)")
        want_h, want_c = ref.lstm_step(*args)
        h_mistakes, c_mistakes = _lstm_mistakes(args)
        expect_close(c_t, want_c, f"c_t for B={B}, C={C}, Hd={Hd}", mistakes=c_mistakes)
        expect_close(h_t, want_h, f"h_t for B={B}, C={C}, Hd={Hd}", mistakes=h_mistakes)
        cases += 1
    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), *_weights(3, 4, n_gates=4))
    mine = grad_of(lambda c_: fn(args[0], args[1], c_, *args[3:])[1], args[2])[0]
    if mine is None:
        raise CheckFailed("no gradient reaches c_prev from c_t", "compute c_t from c_prev with torch operations (no .detach()).")
    expect_close(mine, grad_of(lambda c_: ref.lstm_step(args[0], args[1], c_, *args[3:])[1], args[2])[0],
                 "gradient of c_t with respect to c_prev")
    return cases + 1
