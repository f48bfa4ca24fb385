"""Checks for lesson 09 (training a translator).

    check_label_smoothed_loss(fn)  fn(logits (B, T, V), targets (B, T), eps, pad_id) -> scalar loss
    check_beam_search_step(fn)     fn(log_probs (B, K, V), beam_scores (B, K), beam_size)
                                   -> (new_scores, beam_idx, token_idx), each (B, beam_size), best first
    check_greedy_decode(fn)        fn(model, src (B, S), bos_id, eos_id, max_len) -> tokens (B, L),
                                   no <bos>, <eos> kept, pad_id (0) after it, L <= max_len

References: F.cross_entropy(label_smoothing=eps, ignore_index=pad_id) and tfmlib.decoding.
Greedy decoding is checked on ``TableModel`` (scripted next-token logits, so that rows
end at chosen steps) and on a small untrained tfmlib.Seq2SeqTransformer.

Shape legend: B batch, T target length, S source length, V vocabulary, K beams.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TransformerConfig
from ..decoding import beam_search_step, greedy_decode
from ..transformer import Seq2SeqTransformer
from .core import CheckFailed, call, check, expect_close, expect_tensor

__all__ = ["check_label_smoothed_loss", "check_beam_search_step", "check_greedy_decode", "TableModel"]


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=1e-4,
                                                 equal_nan=True)


# ------------------------------------------------------------ label smoothing
NO_PAD = ("padding is scored: positions whose target is pad_id must not count, neither in the sum nor in the "
          "number you divide by (F.cross_entropy's ignore_index=pad_id does both).")
PAD_IN_MEAN = "divide by the number of NON-pad targets, not by B * T: padding must not dilute the mean."
V_MINUS_1 = ("spread eps over all V classes, the true one included: target = (1 - eps) one-hot + eps / V "
             "(PyTorch's label_smoothing convention), not eps / (V - 1) over the other classes.")
NO_PAD_CLASS = ("keep the pad class in the uniform part too: PyTorch spreads eps / V over all V classes; "
                "only pad TARGETS (rows) are ignored.")
NO_ONE_MINUS = ("the true class gets (1 - eps) + eps / V: multiply the one-hot part by (1 - eps) "
                "before adding the uniform eps / V.")
NO_SMOOTHING = "eps is ignored: mix the one-hot target with the uniform distribution, (1 - eps) * nll + eps * mean(-log p)."
SUMMED = "average over the non-pad targets (a mean, not a sum): the loss must not grow with the batch."
NO_LOG_SOFTMAX = "turn the logits into log-probabilities first: log_softmax over the last axis (V)."
SOFTMAX_AXIS = "take the log_softmax over the last axis (the V classes), not over the time or batch axis."


def _reference_loss(logits, targets, eps, pad_id):
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=pad_id, label_smoothing=eps)


def _loss_mistakes(logits, targets, eps, pad_id):
    V = logits.shape[-1]
    log_probs = F.log_softmax(logits, -1)                                          # (B, T, V)
    nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)                     # (B, T)
    uniform = -log_probs.mean(-1)                                                    # (B, T)
    others = (-log_probs.sum(-1) - nll) / (V - 1)                                    # mean over the V - 1 others
    keep = (targets != pad_id).double()
    n = keep.sum()

    def mean(per_token, over=None):
        return (per_token * keep).sum() / (n if over is None else over)

    no_pad_col = torch.cat([log_probs[..., :pad_id], log_probs[..., pad_id + 1:]], -1)  # (B, T, V - 1)
    flat = logits.flatten(0, -2), targets.flatten()
    raw = logits                                                                     # logits used as log-probs
    wrong_axis = F.log_softmax(logits, 1)
    return [
        (NO_PAD, F.cross_entropy(*flat, label_smoothing=eps)),
        (PAD_IN_MEAN, mean((1 - eps) * nll + eps * uniform, over=targets.numel())),
        (V_MINUS_1, mean((1 - eps) * nll + eps * others)),
        (NO_PAD_CLASS, mean((1 - eps) * nll + eps * -no_pad_col.mean(-1))),
        (NO_ONE_MINUS, mean(nll + eps * uniform)),
        (NO_SMOOTHING, F.cross_entropy(*flat, ignore_index=pad_id)),
        (SUMMED, (((1 - eps) * nll + eps * uniform) * keep).sum()),
        (NO_LOG_SOFTMAX, mean((1 - eps) * -raw.gather(-1, targets[..., None]).squeeze(-1) + eps * -raw.mean(-1))),
        (SOFTMAX_AXIS, mean((1 - eps) * -wrong_axis.gather(-1, targets[..., None]).squeeze(-1)
                            + eps * -wrong_axis.mean(-1))),
    ]


@check("label_smoothed_loss")
def check_label_smoothed_loss(fn) -> int:
    cases = [  # (what, B, T, V, eps, pad_id, padded positions per row)
        ("B=3, T=5, V=7, eps=0.1, padding", 3, 5, 7, 0.1, 0, [0, 2, 4]),
        ("a batch of one, T=1, V=5, eps=0.2", 1, 1, 5, 0.2, 0, [0]),
        ("eps=0 (plain cross-entropy), pad_id=3", 2, 4, 6, 0.0, 3, [1, 0]),
        ("eps=0.3, pad_id=2, large logits", 4, 6, 9, 0.3, 2, [5, 0, 3, 1]),
    ]
    for what, B, T, V, eps, pad_id, n_pad in cases:
        scale = 8.0 if "large" in what else 2.0
        logits = (torch.randn(B, T, V) * scale).double()
        targets = torch.randint(0, V, (B, T))
        targets[targets == pad_id] = (pad_id + 1) % V                       # real targets are never pad...
        for row, k in enumerate(n_pad):
            if k:
                targets[row, T - k:] = pad_id                               # ...except the padding at the end
        expected = _reference_loss(logits, targets, eps, pad_id)
        out = expect_tensor(call(fn, logits.clone(), targets.clone(), eps, pad_id), f"loss for {what}")
        if out.numel() == 1 and out.dim() > 0:
            raise CheckFailed(f"loss for {what}: expected a scalar (shape ()), got shape {tuple(out.shape)}",
                              "return one number: the mean over the non-pad targets (use .mean() or a sum / count).")
        if out.dim() > 0:
            raise CheckFailed(f"loss for {what}: expected a scalar, got shape {tuple(out.shape)}",
                              "reduce to one number: the mean over the non-pad targets.")
        if not _same(out, expected):
            for hint, wrong in _loss_mistakes(logits, targets, eps, pad_id):
                if _same(out, wrong) and not _same(wrong, expected):
                    raise CheckFailed(f"loss for {what}: {out.item():.5f}, expected {expected.item():.5f}", hint)
            raise CheckFailed(f"loss for {what}: {out.item():.5f}, expected {expected.item():.5f}")
    # gradients flow to the logits, and padded positions get none
    logits = torch.randn(2, 4, 6, requires_grad=True)
    targets = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0]])
    out = call(fn, logits, targets, 0.1, 0)
    try:
        (grad,) = torch.autograd.grad(out, logits)
    except RuntimeError as e:
        raise CheckFailed(f"no gradient reaches the logits: {e}",
                          "keep the computation differentiable: no .item(), .detach() or .numpy().") from None
    ref = logits.detach().clone().requires_grad_()
    (ref_grad,) = torch.autograd.grad(_reference_loss(ref, targets, 0.1, 0), ref)
    if grad[targets == 0].abs().max() > 0:
        raise CheckFailed("padded positions receive a gradient", NO_PAD)
    expect_close(grad, ref_grad, "gradient with respect to the logits")
    return len(cases) + 1


# ------------------------------------------------------------ beam search step
NO_PREVIOUS = ("add the previous beam scores: a candidate's score is beam_scores[b, k] + log_probs[b, k, v] "
               "(log-probabilities of a sequence add up), otherwise every step forgets the past.")
PER_BEAM = ("take the top-k over ALL K x V candidates of a source at once (flatten beams and vocabulary "
            "together, reshape to (B, K * V)), not the best tokens of each beam separately.")
INDEX_SPLIT = "a flat index i over (K, V) means beam i // V and token i % V (V = log_probs.shape[-1])."
OVER_BATCH = "keep sources apart: flatten only (K, V) to K * V per source, never across the batch axis."
BEST_FIRST = "return the candidates best first (topk sorts in descending order)."
MULTIPLIED = "log-probabilities add (probabilities multiply): use beam_scores + log_probs, not a product."
K_NOT_BEAM = ("return beam_size candidates per source: K (the beams that come in) may differ from beam_size "
              "(at the first step K = 1).")


def _step_mistakes(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    out = []

    def topk_flat(scores):
        s, i = scores.reshape(B, K * V).topk(beam_size, -1)  # (B, K, V) -> (B, K * V)
        return s, i // V, i % V

    out.append((NO_PREVIOUS, topk_flat(log_probs)))
    cand = beam_scores[:, :, None] + log_probs                            # (B, K, V)
    best_per_beam, tok = cand.max(-1)                                     # (B, K): one per beam
    if K == beam_size:
        out.append((PER_BEAM, (best_per_beam, torch.arange(K).expand(B, K), tok)))
    s_pb, t_pb = cand.topk(min(beam_size, V), -1)                         # (B, K, k) per beam
    s_pb, t_pb = s_pb.reshape(B, -1)[:, :beam_size], t_pb.reshape(B, -1)[:, :beam_size]
    b_pb = torch.arange(K)[:, None].expand(K, min(beam_size, V)).reshape(-1)[:beam_size].expand(B, -1)
    out.append((PER_BEAM, (s_pb, b_pb, t_pb)))
    s, i = cand.reshape(B, K * V).topk(beam_size, -1)
    out.append((INDEX_SPLIT, (s, i % K, i // K)))
    out.append((INDEX_SPLIT, (s, i % V, i // V)))
    out.append((INDEX_SPLIT, (s, i // K, i % K)))
    s_up, i_up = cand.reshape(B, K * V).topk(beam_size, -1, largest=True, sorted=True)
    out.append((BEST_FIRST, (s_up.flip(-1), (i_up // V).flip(-1), (i_up % V).flip(-1))))
    prod = beam_scores[:, :, None] * log_probs
    s, i = prod.reshape(B, K * V).topk(beam_size, -1)
    out.append((MULTIPLIED, (s, i // V, i % V)))
    return out


def _as_triple(out, what):
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise CheckFailed(f"{what}: expected a tuple (new_scores, beam_idx, token_idx), got {type(out).__name__}"
                          + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""),
                          "return three tensors: the new scores, which beam each came from, which token.")
    return [expect_tensor(x, f"{what}[{i}]") for i, x in enumerate(out)]


@check("beam_search_step")
def check_beam_search_step(fn) -> int:
    cases = [  # (what, B, K, V, beam_size, first step)
        ("B=2, K=3 beams, V=7", 2, 3, 7, 3, False),
        ("a batch of one, K=4, V=5", 1, 4, 5, 4, False),
        ("the first step: K=1 beam in, beam_size=3 out", 2, 1, 6, 3, False),
        ("beam size 1 (= greedy)", 3, 1, 8, 1, False),
        ("scores [0, -inf, -inf] (all beams start equal)", 2, 3, 6, 3, True),
        ("K=2 beams in, beam_size=4 out, V=5", 3, 2, 5, 4, False),
    ]
    for what, B, K, V, beam_size, first in cases:
        log_probs = F.log_softmax(torch.randn(B, K, V) * 2, -1)
        beam_scores = -torch.rand(B, K) * 3 - 0.5
        if first:
            beam_scores[:, 1:] = float("-inf")
            beam_scores[:, 0] = 0.0
        args = (log_probs.clone(), beam_scores.clone(), beam_size)
        scores, beam_idx, token_idx = _as_triple(call(fn, *args), f"output for {what}")
        want = beam_search_step(log_probs, beam_scores, beam_size)
        got = (scores, beam_idx, token_idx)
        names = ("new_scores", "beam_idx", "token_idx")
        for name, g, w in zip(names, got, want):
            if tuple(g.shape) != tuple(w.shape):
                hint = K_NOT_BEAM if g.shape[-1:] == (K,) and K != beam_size else \
                    OVER_BATCH if g.dim() == 1 or g.shape[0] != B else None
                raise CheckFailed(f"{name} for {what}: expected shape {tuple(w.shape)}, got {tuple(g.shape)}", hint)
        for name, g in zip(names[1:], got[1:]):
            if g.is_floating_point() or g.dtype == torch.bool:
                raise CheckFailed(f"{name} for {what}: expected integer indices, got dtype {g.dtype}",
                                  "use integer division // and % on the flat topk indices.")
        if all(_same(g.double(), w.double()) for g, w in zip(got, want)):
            continue
        for hint, wrong in _step_mistakes(log_probs, beam_scores, beam_size):
            if all(g.shape == w.shape and _same(g.double(), w.double()) for g, w in zip(got, wrong)):
                raise CheckFailed(f"output for {what}: differs from the reference", hint)
        bad = next(n for n, g, w in zip(names, got, want) if not _same(g.double(), w.double()))
        raise CheckFailed(f"{bad} for {what}: differs from the reference "
                          f"(expected {want[names.index(bad)].tolist()}, got {got[names.index(bad)].tolist()})")
    return len(cases)


# ------------------------------------------------------------ greedy decoding
class TableModel(nn.Module):
    """A stand-in translator with scripted logits, so that a check can say where each row must end.

    The next-token logits depend on the source's first id s, the position t and the input token u:
    ``decode(tgt_in, ...)[b, t] = table[s_b, t, tgt_in[b, t]]``. table: (N, T_max, V, V).
    """

    def __init__(self, table: torch.Tensor, pad_id: int = 0):
        super().__init__()
        self.register_buffer("table", table)
        self.pad_id = pad_id

    def encode(self, src: torch.Tensor):
        memory = src[:, :1, None].float()                                   # (B, 1, 1): which script
        return memory, torch.ones(src.shape[0], 1, 1, 1, dtype=torch.bool)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        script = memory[:, 0, 0].long() % self.table.shape[0]               # (B,)
        T = tgt_in.shape[1]
        if T > self.table.shape[1]:
            raise ValueError(f"TableModel knows {self.table.shape[1]} positions, got a decoder input of length {T}")
        positions = torch.arange(T)
        return self.table[script[:, None], positions[None, :], tgt_in]     # (B, T, V)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, *self.encode(src))


def make_table_model(ends: list[int | None], V: int = 8, T_max: int = 12, bos_id: int = 1, eos_id: int = 2,
                     pad_id: int = 0, seed: int = 0) -> TableModel:
    """Script n = len(ends): greedy decoding of source id i produces <eos> at step ends[i] (None: never)."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(len(ends), T_max, V, V, generator=gen) * 3
    table[..., [pad_id, bos_id]] = -20.0                                  # never predicted
    table[..., eos_id] = -10.0
    for i, end in enumerate(ends):
        if end is not None:
            table[i, end, :, eos_id] = 20.0                               # <eos> at step `end`, whatever came before
    return TableModel(table, pad_id)


NO_STOP = ("a row is finished once it has produced eos_id: every later position must hold pad_id. Keep a boolean "
           "`finished` per row and write pad_id where it is True.")
STOP_ALL = "stop the loop when EVERY row has finished (finished.all()), not as soon as one row produces <eos>."
KEEP_BOS = "return only the generated tokens: drop the <bos> column you started with."
LAST_POS = "use the logits of the LAST position, logits[:, -1]: it predicts the next token."
WHOLE_PREFIX = "feed the decoder the whole prefix <bos> y1 .. yt at every step, not only the last token."
DROP_EOS = "keep the <eos> token itself in the output; only the positions AFTER it hold pad_id."
MAX_LEN = "generate at most max_len tokens (the <bos> does not count), unless every row finished earlier."
EOS_AS_FILL = "after <eos> write pad_id (not <eos> again): finished rows are padded."


def _wrong_greedy(model, src, bos_id, eos_id, max_len, pad_id=0, *, stop="all", fill=True, position=-1,
                  prefix=True, keep_bos=False, keep_eos=True, steps=None, fill_id=None):
    memory, src_mask = model.encode(src)
    B = src.shape[0]
    dec = torch.full((B, 1), bos_id, dtype=torch.long)
    finished = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len if steps is None else steps):
        logits = model.decode(dec if prefix else dec[:, -1:], memory, src_mask)[:, position if prefix else -1]
        nxt = logits.argmax(-1)
        if fill:
            nxt = nxt.masked_fill(finished, pad_id if fill_id is None else fill_id)
        just = nxt == eos_id
        if not keep_eos:
            nxt = nxt.masked_fill(just & ~finished, pad_id)
        dec = torch.cat([dec, nxt[:, None]], 1)
        finished |= just
        if stop == "all" and finished.all() or stop == "any" and finished.any():
            break
    return dec if keep_bos else dec[:, 1:]


def _pad_to(tokens: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    if tokens.shape[1] >= width:
        return tokens
    return torch.cat([tokens, torch.full((tokens.shape[0], width - tokens.shape[1]), pad_id, dtype=tokens.dtype)], 1)


def _greedy_cases():
    bos, eos = 1, 2
    table = make_table_model([3, 1, 5, None, 0, 2])
    cfg = TransformerConfig.preset("tiny", src_vocab_size=9, tgt_vocab_size=7, dropout=0.0, max_len=16)
    with torch.random.fork_rng():  # an untrained model whose rows differ and end at different steps
        torch.manual_seed(0)
        transformer = Seq2SeqTransformer(cfg).eval()
        with torch.no_grad():
            for layer in transformer.transformer.decoder.layers:  # let the source matter more
                layer.cross_attn.out_proj.weight.mul_(6.0)
                layer.cross_attn.v_proj.weight.mul_(3.0)
            transformer.lm_head.weight.normal_(0.0, 1.0)
            transformer.lm_head.weight[[0, bos]] = 0.0                # pad and <bos>: logit 0
            transformer.lm_head.weight[eos] *= 0.6
        src_t = torch.randint(3, 9, (4, 6))
    src_t[1, 4:] = 0                                                      # padded sources
    src_t[3, 2:] = 0
    return [  # (what, model, src, max_len)
        ("rows that end at steps 3, 1, 5", table, torch.tensor([[0, 5], [1, 5], [2, 5]]), 8),
        ("a batch of one", table, torch.tensor([[0, 4, 4]]), 8),
        ("a row that never produces <eos> (cut at max_len=6)", table, torch.tensor([[3], [1], [5]]), 6),
        ("a row whose first token is <eos>", table, torch.tensor([[4], [2]]), 7),
        ("max_len=1", table, torch.tensor([[0], [4]]), 1),
        ("an untrained Seq2SeqTransformer with padded sources", transformer, src_t, 10),
    ], bos, eos


@check("greedy_decode")
def check_greedy_decode(fn) -> int:
    cases, bos, eos = _greedy_cases()
    pad = 0
    for what, model, src, max_len in cases:
        with torch.no_grad():
            expected = greedy_decode(model, src, bos, eos, max_len, pad_id=pad)
            out = call(fn, model, src.clone(), bos, eos, max_len)
        out = expect_tensor(out, f"tokens for {what}")
        B = src.shape[0]
        if out.dim() != 2 or out.shape[0] != B:
            raise CheckFailed(f"tokens for {what}: expected shape (B={B}, L) with L <= max_len={max_len}, "
                              f"got {tuple(out.shape)}", "return one row of token ids per source: (B, L).")
        if out.is_floating_point() or out.dtype == torch.bool:
            raise CheckFailed(f"tokens for {what}: expected integer token ids, got dtype {out.dtype}",
                              "the argmax of the logits is already a LongTensor: keep it.")
        width = max_len + 1
        got, want = _pad_to(out.long(), width, pad), _pad_to(expected, width, pad)
        if torch.equal(got, want):
            continue
        with torch.no_grad():
            variants = [
                (KEEP_BOS, dict(keep_bos=True)), (NO_STOP, dict(fill=False)),
                (NO_STOP, dict(fill=False, stop="never")), (STOP_ALL, dict(stop="any")),
                (LAST_POS, dict(position=0)), (WHOLE_PREFIX, dict(prefix=False)),
                (DROP_EOS, dict(keep_eos=False)), (EOS_AS_FILL, dict(fill_id=eos)),
                (MAX_LEN, dict(steps=max_len + 1)), (MAX_LEN, dict(steps=max_len - 1)),
            ]
            for hint, switches in variants:
                wrong = _pad_to(_wrong_greedy(model, src, bos, eos, max_len, pad, **switches), width, pad)
                if torch.equal(got, wrong) and not torch.equal(wrong, want):
                    raise CheckFailed(f"tokens for {what}: differ from the reference", hint)
        if out.shape[1] > max_len:
            raise CheckFailed(f"tokens for {what}: {out.shape[1]} tokens, more than max_len={max_len}", MAX_LEN)
        raise CheckFailed(f"tokens for {what}: expected {expected.tolist()}, got {out.tolist()}")
    return len(cases)
