"""Recurrent networks written out, to measure what the Transformer replaced.

    vanilla RNN   h_t = tanh(x_t W_xh^T + h_{t-1} W_hh^T + b)
    LSTM          i, f, g, o = split(x_t W_ih^T + h_{t-1} W_hh^T + b)      (PyTorch's gate order)
                  c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
                  h_t = sigmoid(o) * tanh(c_t)

Weights use PyTorch's layout (W_xh (Hd, C), LSTM weights (4 Hd, .)), so they copy one to one
from nn.RNN / nn.LSTM; b is the sum of PyTorch's two biases (b_ih + b_hh).

Measurements: ``sequential_depth`` (longest chain of dependent operations), ``gradient_norms_by_distance``
(how much gradient reaches early inputs), ``time_forward``; and the copy task with an LSTM encoder-decoder,
with or without attention over the encoder states (``Seq2SeqLSTM``, ``train_copy_task``, ``copy_accuracy``).

Shape legend: B batch, T time steps, C input width, Hd hidden width, V vocabulary size.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .attention import scaled_dot_product_attention
from .utils import check_tensor

__all__ = ["rnn_step", "rnn_forward", "lstm_step", "ScratchRNN", "ScratchLSTM", "sequential_depth",
           "gradient_norms_by_distance", "time_forward", "CopyTaskConfig", "copy_task_batch",
           "Seq2SeqLSTM", "train_copy_task", "copy_accuracy", "BOS"]

BOS = 0  # begin-of-sequence token of the copy task; symbols are 1 .. V-1


def _check_step(x_t, h_prev, W_x, W_h, b, n_gates: int) -> None:
    """Shapes of one recurrent step: x_t (B, C), h_prev (B, Hd), W_x (n Hd, C), W_h (n Hd, Hd), b (n Hd,)."""
    check_tensor(x_t, "x_t", ndim=2, dtype_kind="float")
    check_tensor(h_prev, "h_prev", ndim=2, dtype_kind="float")
    B, C = x_t.shape
    Hd = h_prev.shape[1]
    if h_prev.shape[0] != B:
        raise ValueError(f"x_t and h_prev must share the batch size, got x_t {tuple(x_t.shape)} and h_prev {tuple(h_prev.shape)}")
    for name, w, shape in (("W_xh" if n_gates == 1 else "W_ih", W_x, (n_gates * Hd, C)),
                           ("W_hh", W_h, (n_gates * Hd, Hd)), ("b", b, (n_gates * Hd,))):
        check_tensor(w, name, dtype_kind="float")
        if tuple(w.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for C={C}, Hd={Hd}, got {tuple(w.shape)}")


def rnn_step(x_t: torch.Tensor, h_prev: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor,
             b: torch.Tensor) -> torch.Tensor:
    """One vanilla RNN step: x_t (B, C), h_prev (B, Hd) -> h_t (B, Hd). Equals nn.RNNCell."""
    _check_step(x_t, h_prev, W_xh, W_hh, b, n_gates=1)
    return torch.tanh(x_t @ W_xh.T + h_prev @ W_hh.T + b)  # (B, C) @ (C, Hd) + (B, Hd) @ (Hd, Hd)


def rnn_forward(x: torch.Tensor, h0: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor,
                b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``rnn_step`` over time: x (B, T, C), h0 (B, Hd) -> (outputs (B, T, Hd), h_T (B, Hd)).

    Step t needs h_{t-1}: the T steps run one after another, whatever the hardware.
    """
    check_tensor(x, "x", ndim=3, dtype_kind="float")
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = rnn_step(x[:, t], h, W_xh, W_hh, b)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h  # T x (B, Hd) -> (B, T, Hd)


def lstm_step(x_t: torch.Tensor, h_prev: torch.Tensor, c_prev: torch.Tensor, W_ih: torch.Tensor,
              W_hh: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step: x_t (B, C), h_prev and c_prev (B, Hd) -> (h_t, c_t). Equals nn.LSTMCell.

    Gates in PyTorch's order: input i, forget f, candidate g, output o.
    """
    _check_step(x_t, h_prev, W_ih, W_hh, b, n_gates=4)
    gates = x_t @ W_ih.T + h_prev @ W_hh.T + b       # (B, 4 Hd)
    i, f, g, o = gates.chunk(4, dim=-1)                # 4 x (B, Hd)
    c_t = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)  # keep some old memory, write some new
    h_t = torch.sigmoid(o) * torch.tanh(c_t)           # show part of the memory
    return h_t, c_t


class ScratchRNN(nn.Module):
    """Vanilla RNN layer looping ``rnn_step``. forward(x (B, T, C), h0=None) -> (outputs (B, T, Hd), h_T).

    ``recurrent_gain``: if given, W_hh is drawn as gain * N(0, 1/Hd): below 1 gradients vanish,
    above 1 the dynamics turn chaotic and gradients explode. Default: PyTorch's init.
    """

    def __init__(self, input_size: int, hidden_size: int, recurrent_gain: float | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))
        if recurrent_gain is not None:
            with torch.no_grad():
                self.weight_hh.normal_(0.0, recurrent_gain / math.sqrt(hidden_size))

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        check_tensor(x, "x", ndim=3, dtype_kind="float")
        h0 = x.new_zeros(x.shape[0], self.hidden_size) if h0 is None else h0
        return rnn_forward(x, h0, self.weight_ih, self.weight_hh, self.bias)

    @torch.no_grad()
    def load_from_torch(self, ref: nn.RNN) -> "ScratchRNN":
        """Copy a one-layer nn.RNN (tanh) or nn.RNNCell."""
        suffix = "_l0" if isinstance(ref, nn.RNN) else ""
        self.weight_ih.copy_(getattr(ref, "weight_ih" + suffix))
        self.weight_hh.copy_(getattr(ref, "weight_hh" + suffix))
        self.bias.copy_(getattr(ref, "bias_ih" + suffix) + getattr(ref, "bias_hh" + suffix))
        return self


class ScratchLSTM(nn.Module):
    """LSTM layer looping ``lstm_step``. forward(x (B, T, C), state=None) -> (outputs (B, T, Hd), (h_T, c_T)).

    ``forget_bias`` is added to the forget gate's bias: sigmoid(f) starts near 1, so the cell state
    (and its gradient) is carried further. 1.0 is common practice; PyTorch's default is 0.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 0.0):
        super().__init__()
        self.hidden_size = hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))
        with torch.no_grad():
            self.bias[hidden_size:2 * hidden_size] += forget_bias  # gate order i, f, g, o

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        check_tensor(x, "x", ndim=3, dtype_kind="float")
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        outputs = []
        for t in range(x.shape[1]):
            h, c = lstm_step(x[:, t], h, c, self.weight_ih, self.weight_hh, self.bias)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)  # T x (B, Hd) -> (B, T, Hd)

    @torch.no_grad()
    def load_from_torch(self, ref: nn.LSTM) -> "ScratchLSTM":
        """Copy a one-layer nn.LSTM or nn.LSTMCell."""
        suffix = "_l0" if isinstance(ref, nn.LSTM) else ""
        self.weight_ih.copy_(getattr(ref, "weight_ih" + suffix))
        self.weight_hh.copy_(getattr(ref, "weight_hh" + suffix))
        self.bias.copy_(getattr(ref, "bias_ih" + suffix) + getattr(ref, "bias_hh" + suffix))
        return self


def sequential_depth(output: torch.Tensor) -> int:
    """Length of the longest chain of autograd operations that produced ``output``: operations on one
    chain must run one after another, so no amount of parallel hardware makes the chain shorter."""
    if output.grad_fn is None:
        raise ValueError("output has no autograd history: compute it from tensors with requires_grad=True")
    depth: dict = {}
    stack = [(output.grad_fn, False)]
    while stack:  # iterative post-order walk (a long RNN would overflow Python's recursion limit)
        node, children_done = stack.pop()
        if node in depth:
            continue
        parents = [p for p, _ in node.next_functions if p is not None]
        if children_done:
            depth[node] = 1 + max((depth[p] for p in parents), default=0)
        else:
            stack.append((node, True))
            stack.extend((p, False) for p in parents if p not in depth)
    return depth[output.grad_fn]


def gradient_norms_by_distance(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """How much gradient reaches each input: x (B, T, C) -> norms (T,), where norms[d] is the mean over
    the batch of || d out_{T-1} / d x_{T-1-d} ||, out_{T-1} being the model's output at the last position
    (summed over features). ``model(x)`` may return a tensor (B, T, .) or a tuple starting with one."""
    check_tensor(x, "x", ndim=3, dtype_kind="float")
    x = x.detach().clone().requires_grad_()
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(out[:, -1].sum(), x)  # (B, T, C)
    return grad.norm(dim=-1).mean(dim=0).flip(0)        # (T,), index = distance from the last position


def time_forward(module: nn.Module, x: torch.Tensor, repeats: int = 5) -> float:
    """Best-of-``repeats`` wall time in seconds of ``module(x)`` without autograd (after one warm-up run).
    The minimum is the least disturbed by other programs sharing the CPU."""
    times = []
    with torch.no_grad():
        module(x)
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return min(times)


@dataclass(frozen=True)
class CopyTaskConfig:
    """The copy task: read ``length`` random symbols, then write them out again."""
    vocab_size: int = 20      # BOS + 19 symbols
    d_embed: int = 32
    d_hidden: int = 64        # the encoder's whole summary is this many numbers (h) plus as many (c)
    min_len: int = 2
    max_len: int = 16         # training lengths are drawn uniformly from [min_len, max_len]
    steps: int = 300
    batch_size: int = 128
    lr: float = 0.01

    def __post_init__(self):
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (BOS + 2 symbols), got {self.vocab_size}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}")


def copy_task_batch(batch_size: int, length: int, vocab_size: int, generator: torch.Generator | None = None):
    """src (B, T) random symbols in 1..V-1; tgt_in (B, T) = BOS then src shifted right; tgt_out (B, T) = src."""
    src = torch.randint(1, vocab_size, (batch_size, length), generator=generator)
    tgt_in = torch.cat([torch.full((batch_size, 1), BOS), src[:, :-1]], dim=1)  # teacher forcing
    return src, tgt_in, src.clone()


class Seq2SeqLSTM(nn.Module):
    """LSTM encoder-decoder. Without attention the decoder sees the input only through the encoder's
    final (h, c): a fixed-size summary. With ``attention=True`` each decoder state also queries every
    encoder state (dot-product attention) and mixes the context in: direct access to every position."""

    def __init__(self, vocab_size: int, d_embed: int, d_hidden: int, attention: bool):
        super().__init__()
        self.attention = attention
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.encoder = nn.LSTM(d_embed, d_hidden, batch_first=True)
        self.decoder = nn.LSTM(d_embed, d_hidden, batch_first=True)
        self.combine = nn.Linear(2 * d_hidden, d_hidden) if attention else None
        self.to_logits = nn.Linear(d_hidden, vocab_size)

    def encode(self, src: torch.Tensor):
        """src (B, T_src) -> (encoder states (B, T_src, Hd), final (h, c), each (1, B, Hd))."""
        check_tensor(src, "src", ndim=2, dtype_kind="int")
        return self.encoder(self.embed(src))

    def decode(self, tgt_in: torch.Tensor, state, enc_states: torch.Tensor):
        """tgt_in (B, T_tgt) -> (logits (B, T_tgt, V), new state, attn_weights (B, T_tgt, T_src) or None)."""
        dec_states, state = self.decoder(self.embed(tgt_in), state)  # (B, T_tgt, Hd)
        attn_weights = None
        if self.attention:
            context, attn_weights = scaled_dot_product_attention(dec_states, enc_states, enc_states)
            dec_states = torch.tanh(self.combine(torch.cat([context, dec_states], dim=-1)))  # (B, T_tgt, 2 Hd) -> Hd
        return self.to_logits(dec_states), state, attn_weights

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        enc_states, state = self.encode(src)
        return self.decode(tgt_in, state, enc_states)[0]

    @torch.no_grad()
    def generate(self, src: torch.Tensor, n_steps: int):
        """Greedy decoding: -> (tokens (B, n_steps), attn_weights (B, n_steps, T_src) or None)."""
        enc_states, state = self.encode(src)
        token = torch.full((src.shape[0], 1), BOS, dtype=torch.long)
        tokens, weights = [], []
        for _ in range(n_steps):
            logits, state, w = self.decode(token, state, enc_states)
            token = logits.argmax(dim=-1)  # (B, 1)
            tokens.append(token)
            weights.append(w)
        return torch.cat(tokens, dim=1), (torch.cat(weights, dim=1) if self.attention else None)


def train_copy_task(model: Seq2SeqLSTM, cfg: CopyTaskConfig, seed: int = 0, progress: bool | str = False) -> list[float]:
    """Adam on the copy task, each batch of one random length in [min_len, max_len]. Returns the losses.

    progress: a tqdm bar over the steps (a string: the bar's label)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    losses = []
    for _ in tqdm(range(cfg.steps), disable=not progress, unit="step",
                  desc=progress if isinstance(progress, str) else "training"):
        length = int(torch.randint(cfg.min_len, cfg.max_len + 1, (1,), generator=gen))
        src, tgt_in, tgt_out = copy_task_batch(cfg.batch_size, length, cfg.vocab_size, gen)
        logits = model(src, tgt_in)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), tgt_out.reshape(-1))  # (B*T, V) vs (B*T,)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def copy_accuracy(model: Seq2SeqLSTM, length: int, vocab_size: int, n: int = 256, seed: int = 1) -> float:
    """Fraction of symbols copied correctly by greedy decoding, on ``n`` fresh sequences of ``length``."""
    src, _, _ = copy_task_batch(n, length, vocab_size, torch.Generator().manual_seed(seed))
    tokens, _ = model.generate(src, length)
    return (tokens == src).float().mean().item()
