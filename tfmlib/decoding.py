"""Decoding: turning a trained encoder-decoder into output sequences.

At test time there is no target to shift right: the decoder is fed its **own**
previous predictions, one token per step. The source is encoded once
(``model.encode``); each step runs the decoder on the tokens so far
(``model.decode``) and keeps the logits of the last position.

    tokens = greedy_decode(model, src, bos_id, eos_id, max_len=12)     # (B, L) ids, pad after <eos>
    beams = beam_search(model, src, bos_id, eos_id, max_len=12, beam_size=4)
    beams[0][0].tokens, beams[0][0].score                             # best hypothesis of source 0
    sequence_log_prob(model, src, tokens, bos_id)                     # (B,) log p(tokens | src)

``model`` is anything with ``encode(src) -> (memory, src_mask)`` and
``decode(tgt_in, memory, src_mask) -> logits (B, T, V)``, e.g. tfmlib.Seq2SeqTransformer.
Returned token rows never contain <bos>; they end with <eos> (unless ``max_len``
ran out first) and are right-padded with ``pad_id``.

Shape legend: B batch (sources), K beams per source, S source length,
T tokens so far, V target vocabulary, L generated length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import shift_right
from .utils import check_tensor

__all__ = ["greedy_decode", "beam_search", "beam_search_step", "Hypothesis", "sequence_log_prob"]


def _check_args(model, src: torch.Tensor, max_len: int) -> None:
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise TypeError(f"model must have encode(src) and decode(tgt_in, memory, src_mask) "
                        f"(e.g. tfmlib.Seq2SeqTransformer), got {type(model).__name__}")
    check_tensor(src, "src", ndim=2, dtype_kind="int")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    limit = getattr(getattr(model, "config", None), "max_len", None)
    # the last step reads <bos> + max_len - 1 tokens: max_len positions of the decoder's table
    if limit is not None and max_len > limit:
        raise ValueError(f"max_len={max_len} is too long for the model's positions "
                         f"(config.max_len={limit}): use max_len <= {limit}")


def _pad_id(model, pad_id: int | None) -> int:
    if pad_id is not None:
        return pad_id
    return getattr(getattr(model, "config", None), "pad_id", 0)


@torch.no_grad()
def greedy_decode(model, src: torch.Tensor, bos_id: int, eos_id: int, max_len: int,
                  pad_id: int | None = None) -> torch.Tensor:
    """Pick the most likely next token at every step, for a whole batch at once.

    src (B, S) -> tokens (B, L), L <= max_len. A row that has produced <eos> is finished:
    its later positions hold ``pad_id`` (default model.config.pad_id). Stops early
    when every row is finished.
    """
    _check_args(model, src, max_len)
    pad_id = _pad_id(model, pad_id)
    memory, src_mask = model.encode(src)                                  # once: (B, S, C), (B, 1, 1, S)
    B = src.shape[0]
    decoder_in = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1): <bos>
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(decoder_in, memory, src_mask)[:, -1]        # (B, T, V) -> (B, V): last position
        next_token = logits.argmax(dim=-1)                                 # (B,)
        next_token = next_token.masked_fill(finished, pad_id)              # finished rows only pad
        decoder_in = torch.cat([decoder_in, next_token[:, None]], dim=1)   # (B, T) -> (B, T + 1)
        finished |= next_token == eos_id
        if finished.all():
            break
    return decoder_in[:, 1:]                                               # drop <bos>: (B, L)


def beam_search_step(log_probs: torch.Tensor, beam_scores: torch.Tensor, beam_size: int):
    """One step of beam search over B sources with K live beams each.

    log_probs   (B, K, V) log p(next token | beam k so far)
    beam_scores (B, K)    log p(beam k so far)
    returns (new_scores, beam_idx, token_idx), each (B, beam_size), best first:
    the beam_size best (beam, token) pairs over all K x V continuations of each source.
    """
    B, K, V = log_probs.shape
    candidate_scores = beam_scores[:, :, None] + log_probs                # (B, K, 1) + (B, K, V) -> (B, K, V)
    flat = candidate_scores.reshape(B, K * V)                              # (B, K, V) -> (B, K * V)
    new_scores, flat_idx = flat.topk(beam_size, dim=-1)                    # (B, beam_size), sorted best first
    return new_scores, flat_idx // V, flat_idx % V                         # which beam, which token


@dataclass(frozen=True)
class Hypothesis:
    """One finished (or cut at max_len) beam: tokens without <bos>, ending in <eos> if finished."""

    tokens: list[int]
    log_prob: float      # sum of the log-probabilities of its tokens (the search objective)
    score: float         # log_prob / len(tokens) ** length_penalty (the ranking)

    def __repr__(self) -> str:
        return f"Hypothesis(tokens={self.tokens}, log_prob={self.log_prob:.4f}, score={self.score:.4f})"


@torch.no_grad()
def beam_search(model, src: torch.Tensor, bos_id: int, eos_id: int, max_len: int, beam_size: int = 4,
                length_penalty: float = 1.0, pad_id: int | None = None) -> list[list[Hypothesis]]:
    """Keep the ``beam_size`` most likely prefixes at every step instead of one.

    src (B, S) -> for each source, ``beam_size`` Hypotheses ranked best first by the length-
    normalised score log p / length ** length_penalty (0: raw log-probability; 1: per-token
    average; longer outputs are not punished merely for having more tokens).
    A beam that has produced <eos> is finished: it keeps its log-probability and only ever
    "extends" with ``pad_id`` at log-probability 0, so live beams compete with it fairly.
    All B x K beams run through the decoder as one batch of B * K rows.
    """
    _check_args(model, src, max_len)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
    pad_id = _pad_id(model, pad_id)
    B, K = src.shape[0], beam_size
    memory, src_mask = model.encode(src)                                   # once: (B, S, C), (B, 1, 1, S)
    memory = memory.repeat_interleave(K, dim=0)                            # (B, S, C) -> (B * K, S, C)
    src_mask = src_mask.repeat_interleave(K, dim=0)                        # (B, 1, 1, S) -> (B * K, 1, 1, S)
    tokens = torch.full((B, K, 1), bos_id, dtype=torch.long, device=src.device)  # (B, K, T)
    beam_scores = torch.full((B, K), float("-inf"), device=src.device)
    beam_scores[:, 0] = 0.0               # all beams start identical: expand only the first one
    finished = torch.zeros(B, K, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(B, K, dtype=torch.long, device=src.device)      # tokens up to and with <eos>
    for _ in range(max_len):
        logits = model.decode(tokens.flatten(0, 1), memory, src_mask)[:, -1]  # (B * K, V): last position
        log_probs = F.log_softmax(logits.float(), dim=-1).view(B, K, -1)   # (B * K, V) -> (B, K, V)
        frozen = torch.full_like(log_probs[0, 0], float("-inf"))
        frozen[pad_id] = 0.0                                               # a finished beam: pad, for free
        log_probs = torch.where(finished[:, :, None], frozen, log_probs)
        beam_scores, beam_idx, token_idx = beam_search_step(log_probs, beam_scores, K)
        tokens = tokens.gather(1, beam_idx[:, :, None].expand(-1, -1, tokens.shape[-1]))  # (B, K, T) reordered
        tokens = torch.cat([tokens, token_idx[:, :, None]], dim=-1)        # (B, K, T + 1)
        was_finished = finished.gather(1, beam_idx)
        lengths = lengths.gather(1, beam_idx) + (~was_finished).long()
        finished = was_finished | (token_idx == eos_id)
        if finished.all():
            break
    return [_ranked(tokens[b, :, 1:], beam_scores[b], lengths[b], length_penalty) for b in range(B)]


def _ranked(tokens: torch.Tensor, log_probs: torch.Tensor, lengths: torch.Tensor,
            length_penalty: float) -> list[Hypothesis]:
    """K beams of one source -> Hypotheses sorted by length-normalised score (best first)."""
    hyps = []
    for row, log_prob, length in zip(tokens.tolist(), log_probs.tolist(), lengths.tolist()):
        length = max(1, length)
        hyps.append(Hypothesis(row[:length], log_prob, log_prob / length ** length_penalty))
    return sorted(hyps, key=lambda h: h.score, reverse=True)


@torch.no_grad()
def sequence_log_prob(model, src: torch.Tensor, tokens: torch.Tensor, bos_id: int,
                      pad_id: int | None = None) -> torch.Tensor:
    """log p(tokens | src) = sum over t of log p(token_t | tokens_<t, src), one teacher-forced pass.

    src (B, S), tokens (B, L) as returned by greedy_decode (no <bos>, padded after <eos>) -> (B,).
    Padding is not scored.
    """
    check_tensor(tokens, "tokens", ndim=2, dtype_kind="int")
    pad_id = _pad_id(model, pad_id)
    logits = model(src, shift_right(tokens, bos_id))                      # (B, L, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    token_log_probs = log_probs.gather(-1, tokens[:, :, None]).squeeze(-1)  # (B, L, 1) -> (B, L)
    scored = tokens != pad_id                                              # (B, L); where, not *: -inf * 0 = NaN
    return torch.where(scored, token_log_probs, torch.zeros_like(token_log_probs)).sum(dim=-1)
