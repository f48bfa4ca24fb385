"""Checks for lesson 10's exercises: the sampling filters (top-k, top-p) and the distribution
a sampler draws from (temperature + filters); the bigram baseline and bits per character are in
tfmlib.checks.lm_metrics. ``check_sft_labels`` (labels for supervised fine-tuning with loss
masking) is lesson 12's exercise; its reference is tfmlib.sft.sft_labels. Each runs the learner's code against tfmlib's reference (``tfmlib.gpt``)
on random logits and edge cases, and names the usual mistake when the output matches it.

Shape legend: B batch, T sequence length, V vocabulary size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..gpt import sampling_probs, top_k_filter, top_p_filter
from ..sft import sft_labels as sft_labels_reference  # one turn: prompt + response + padding
from .core import CheckFailed, call, check, expect_close, expect_tensor

__all__ = ["check_top_k_filter", "check_top_p_filter", "check_sampling_probs", "check_sft_labels",
           "sft_labels_reference", "IGNORE_INDEX",
           "HINT_K_PLUS_ONE", "HINT_K_MINUS_ONE", "HINT_K_SMALLEST", "HINT_K_TIES", "HINT_FILL_ZERO", "HINT_K_CLAMP",
           "HINT_P_EXCLUDES_CROSSING", "HINT_P_KEEPS_ONE_MORE", "HINT_P_UNSORTED", "HINT_P_ASCENDING",
           "HINT_P_LOGITS", "HINT_FILTER_BEFORE_TEMPERATURE", "HINT_TEMPERATURE_MULTIPLY",
           "HINT_NOT_RENORMALISED", "HINT_GREEDY",
           "HINT_MASKED_RESPONSE", "HINT_OFF_BY_ONE", "HINT_NO_SHIFT", "HINT_PADDING", "HINT_ZERO_NOT_IGNORE",
           "HINT_PAD_ID", "HINT_TARGETS_DTYPE"]

IGNORE_INDEX = -100
NEG_INF = float("-inf")

HINT_K_PLUS_ONE = "you kept k + 1 tokens: keep the logits >= the k-th largest (topk(...).values[..., -1:]), not > the (k+1)-th."
HINT_K_MINUS_ONE = "you kept only k - 1 tokens: the k-th largest itself must survive (use >=, or fill where logits < kth)."
HINT_K_SMALLEST = "you kept the k SMALLEST logits: torch.topk returns the largest by default (largest=True)."
HINT_K_TIES = ("ties: a token whose logit equals the k-th largest is kept too (fill -inf where logits < kth). "
               "Scattering exactly k indices drops one of the tied tokens at random.")
HINT_FILL_ZERO = "removed tokens must get -inf (probability 0 after softmax), not 0 — a logit of 0 still has probability."
HINT_K_CLAMP = "k may be larger than the vocabulary: use min(k, V) (then everything is kept)."
HINT_P_EXCLUDES_CROSSING = ("the token that makes the sum cross p must be KEPT: drop a token only when the probability "
                            "of the tokens BEFORE it already reaches p (cumsum - probs >= p), not when cumsum > p.")
HINT_P_KEEPS_ONE_MORE = "you keep one token too many: drop a token as soon as the mass before it reaches p (>= p, not > p)."
HINT_P_UNSORTED = "sort the probabilities in decreasing order before the cumulative sum (the nucleus is the MOST likely tokens)."
HINT_P_ASCENDING = "sort in DEcreasing order (descending=True): the nucleus is made of the most likely tokens."
HINT_P_LOGITS = "take the cumulative sum of probabilities (softmax of the sorted logits), not of the logits."
HINT_FILTER_BEFORE_TEMPERATURE = ("divide by the temperature FIRST, then filter: top-p depends on the probabilities, "
                                  "which the temperature reshapes.")
HINT_TEMPERATURE_MULTIPLY = "divide the logits by the temperature (T > 1 flattens, T < 1 sharpens); do not multiply."
HINT_NOT_RENORMALISED = "after filtering, the kept probabilities must sum to 1: take the softmax of the filtered logits."
HINT_GREEDY = "temperature 0 means greedy: all probability on the argmax (a one-hot row); do not divide by zero."
HINT_MASKED_RESPONSE = ("you masked the RESPONSE and kept the prompt: only the response tokens count, so the targets "
                        "inside the prompt get ignore_index.")
HINT_OFF_BY_ONE = ("off by one: targets[t] is ids[t + 1], so the first response token is the target at position "
                   "prompt_len - 1 (it is predicted from the last prompt token).")
HINT_NO_SHIFT = "inputs are ids[:, :-1] and targets ids[:, 1:]: each position predicts the NEXT token."
HINT_PADDING = "padding targets must be ignored too (pad_id -> ignore_index)."
HINT_PAD_ID = ("use the pad_id argument, not 0: padding is whatever id pad_id says (here 2), and 0 may be a real "
               "token that must stay a target.")
HINT_TARGETS_DTYPE = ("targets must be an integer (torch.long) tensor of class indices, as F.cross_entropy wants: "
                      "start from ids[:, 1:] (long) and masked_fill it, rather than building floats.")
HINT_ZERO_NOT_IGNORE = f"ignored targets are marked with ignore_index={IGNORE_INDEX}, not 0 (0 is a real token id)."


def _logits_cases(with_ties: bool = True):
    """(what, logits) pairs: random, a batch of one, V = 1 ... plus a row with ties."""
    cases = [("random logits (4, 10)", torch.randn(4, 10) * 2),
             ("a batch of one (1, 7)", torch.randn(1, 7) * 2),
             ("a (2, 3, 6) batch with extra leading dimensions", torch.randn(2, 3, 6) * 2)]
    if with_ties:
        cases.append(("a row with ties", torch.tensor([[2.0, 1.0, 1.0, 1.0, -1.0, 0.5]])))
    return cases


def _expect_logits(out, expected, what, mistakes):
    out = expect_tensor(out, what)
    if out.shape == expected.shape and out.is_floating_point():
        if ((out == 0) & torch.isinf(expected)).any() and not torch.isinf(out).any():
            raise CheckFailed(f"{what}: removed tokens are 0, expected -inf", HINT_FILL_ZERO)
    expect_close(out, expected, what, mistakes=mistakes)


# ---------------------------------------------------------------- top-k

def _topk_keep_k(logits, k):  # scatter exactly k indices (ties broken arbitrarily)
    idx = torch.topk(logits, k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, NEG_INF)


@check("top_k_filter")
def check_top_k_filter(fn):
    """fn(logits (..., V), k) -> logits with all but the k largest per row set to -inf."""
    n = 0
    for what, logits in _logits_cases():
        V = logits.shape[-1]
        for k in (1, 2, 3, V):
            expected = top_k_filter(logits, k)
            kth = torch.topk(logits, k, dim=-1).values[..., -1:]                 # (..., 1)
            kth_smallest = torch.topk(logits, k, dim=-1, largest=False).values[..., -1:]
            mistakes = {HINT_K_PLUS_ONE: top_k_filter(logits, min(k + 1, V)),
                        HINT_K_MINUS_ONE: logits.masked_fill(logits <= kth, NEG_INF),
                        HINT_K_SMALLEST: logits.masked_fill(logits > kth_smallest, NEG_INF)}
            if what == "a row with ties":
                mistakes[HINT_K_TIES] = _topk_keep_k(logits, k)
            _expect_logits(call(fn, logits.clone(), k), expected, f"top_k_filter(k={k}) on {what}", mistakes)
            n += 1
    logits = torch.randn(2, 5)
    _expect_logits(call(fn, logits.clone(), 50), logits, "top_k_filter(k=50) on a vocabulary of 5 (k >= V)",
                   {HINT_K_CLAMP: logits})
    return n + 1


# ---------------------------------------------------------------- top-p

def _nucleus(logits, p, strict=False, before=True, descending=True, of_logits=False):
    """Variants of the nucleus rule for the typical mistakes."""
    sorted_logits, order = torch.sort(logits, descending=descending, dim=-1)
    values = sorted_logits if of_logits else torch.softmax(sorted_logits, dim=-1)
    cum = values.cumsum(-1)
    if before:
        drop = (cum - values > p) if strict else (cum - values >= p)
    else:
        drop = cum > p
    drop = drop.scatter(-1, order, drop)
    return logits.masked_fill(drop, NEG_INF)


def _nucleus_unsorted(logits, p):
    probs = torch.softmax(logits, -1)
    cum = probs.cumsum(-1)
    return logits.masked_fill(cum - probs >= p, NEG_INF)


@check("top_p_filter")
def check_top_p_filter(fn):
    """fn(logits (..., V), p) -> logits outside the nucleus of mass p set to -inf."""
    n = 0
    peaked = torch.tensor([[4.0, 2.0, 1.0, 0.0, -1.0, -3.0]])   # probabilities ~0.83, 0.11, ...
    cases = _logits_cases(with_ties=False) + [("a peaked row", peaked)]
    for what, logits in cases:
        for p in (0.3, 0.5, 0.9):
            expected = top_p_filter(logits, p)
            mistakes = {HINT_P_EXCLUDES_CROSSING: _nucleus(logits, p, before=False),
                        HINT_P_UNSORTED: _nucleus_unsorted(logits, p),
                        HINT_P_ASCENDING: _nucleus(logits, p, descending=False),
                        HINT_P_LOGITS: _nucleus(logits, p, of_logits=True)}
            _expect_logits(call(fn, logits.clone(), p), expected, f"top_p_filter(p={p}) on {what}", mistakes)
            n += 1
    # p exactly at a boundary: keep the first token only when its probability equals p
    exact = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    _expect_logits(call(fn, exact.clone(), 0.75), top_p_filter(exact, 0.75),
                   "top_p_filter(p=0.75) on probabilities (0.5, 0.25, 0.125, 0.125)",
                   {HINT_P_KEEPS_ONE_MORE: _nucleus(exact, 0.75, strict=True)})
    # the most likely token alone already exceeds p: it must still be kept
    _expect_logits(call(fn, peaked.clone(), 0.1), top_p_filter(peaked, 0.1),
                   "top_p_filter(p=0.1) where the top token alone has 83 %",
                   {HINT_P_EXCLUDES_CROSSING: _nucleus(peaked, 0.1, before=False)})
    logits = torch.randn(3, 8)
    _expect_logits(call(fn, logits.clone(), 1.0), logits, "top_p_filter(p=1.0) (keeps everything)", {})
    return n + 3


# ---------------------------------------------------------------- temperature + filters

@check("sampling_probs")
def check_sampling_probs(fn):
    """fn(logits (..., V), temperature, top_k=None, top_p=None) -> probabilities (..., V)."""
    cases = [(0.5, None, 0.8), (2.0, None, 0.7), (0.7, 3, None), (1.5, 4, 0.6), (1.0, None, None)]
    n = 0
    for what, logits in _logits_cases(with_ties=False):
        for temperature, k, p in cases:
            expected = sampling_probs(logits, temperature, k, p)
            filtered = logits if k is None else top_k_filter(logits, k)
            filtered = filtered if p is None else top_p_filter(filtered, p)
            mistakes = {HINT_FILTER_BEFORE_TEMPERATURE: torch.softmax(filtered / temperature, -1),
                        HINT_TEMPERATURE_MULTIPLY: sampling_probs(logits * temperature ** 2, temperature, k, p),
                        HINT_NOT_RENORMALISED: torch.softmax(logits / temperature, -1)
                        * ~torch.isinf(sampling_probs(logits, temperature, k, p).log())}
            out = call(fn, logits.clone(), temperature, top_k=k, top_p=p)
            expect_close(out, expected, f"sampling_probs(temperature={temperature}, top_k={k}, top_p={p}) on {what}",
                         mistakes=mistakes)
            n += 1
    logits = torch.randn(3, 9)
    out = call(fn, logits.clone(), 0.0)
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise CheckFailed("sampling_probs(temperature=0): your output contains NaN", HINT_GREEDY)
    expect_close(out, sampling_probs(logits, 0.0), "sampling_probs(temperature=0) (greedy)", hint=HINT_GREEDY)
    return n + 1


# ---------------------------------------------------------------- SFT labels

def _sft_cases():
    """(what, ids (B, T), prompt_lens (B,), pad_id)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 20, (3, 9), generator=g)
    ids[1, 7:] = 0                                                  # row 1 is padded
    short_prompt = torch.randint(3, 20, (2, 7), generator=g)
    short_prompt[0, 5:] = 2                                         # padded with pad_id = 2 ...
    short_prompt[1, 4] = 0                                          # ... and 0 is a real response token
    return [("a batch of 3 (one padded row)", ids, torch.tensor([3, 2, 5]), 0),
            ("a batch of one", torch.randint(3, 20, (1, 6), generator=g), torch.tensor([4]), 0),
            ("a one-token prompt, padded with pad_id=2 (0 is a real token there)", short_prompt,
             torch.tensor([1, 1]), 2)]


@check("sft_labels")
def check_sft_labels(fn):
    """fn(ids (B, T), prompt_lens (B,), pad_id=0) -> (inputs (B, T-1), targets (B, T-1) long), with
    pad_id 0 and 2; targets must be torch.long (F.cross_entropy's class indices)."""
    n = 0
    for what, ids, prompt_lens, pad_id in _sft_cases():
        out = call(fn, ids.clone(), prompt_lens.clone(), pad_id=pad_id)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise CheckFailed(f"sft_labels on {what}: expected a tuple (inputs, targets), got {type(out).__name__}")
        inputs, targets = out
        exp_inputs, exp_targets = sft_labels_reference(ids, prompt_lens, pad_id=pad_id)
        expect_tensor(targets, "targets")
        if targets.shape == ids.shape:
            raise CheckFailed(f"sft_labels on {what}: targets have shape {tuple(targets.shape)}, expected "
                              f"{tuple(exp_targets.shape)}", HINT_NO_SHIFT)
        expect_close(inputs.float(), exp_inputs.float(), f"inputs on {what}", hint=HINT_NO_SHIFT)
        shifted = ids[:, 1:]
        position = torch.arange(1, ids.shape[1])[None, :]
        in_prompt = position < prompt_lens[:, None]
        pad = shifted == pad_id
        wrong = {HINT_PAD_ID: shifted.masked_fill(in_prompt | (shifted == 0), IGNORE_INDEX)} if pad_id != 0 else {}
        wrong |= {HINT_MASKED_RESPONSE: shifted.masked_fill(~in_prompt | pad, IGNORE_INDEX),
                 HINT_OFF_BY_ONE: shifted.masked_fill((position - 1 < prompt_lens[:, None]) | pad, IGNORE_INDEX),
                 HINT_PADDING: shifted.masked_fill(in_prompt, IGNORE_INDEX),
                 HINT_ZERO_NOT_IGNORE: shifted.masked_fill(in_prompt | pad, 0)}
        wrong[HINT_OFF_BY_ONE + " Your targets include the last prompt token."] = shifted.masked_fill(
            (position + 1 < prompt_lens[:, None]) | pad, IGNORE_INDEX)
        expect_close(targets.float(), exp_targets.float(), f"targets on {what}",
                     mistakes={h: w.float() for h, w in wrong.items()})
        if targets.dtype != torch.long:
            raise CheckFailed(f"sft_labels on {what}: targets have dtype {targets.dtype}, expected torch.long (the "
                              "dtype of ids)", HINT_TARGETS_DTYPE)
        n += 1
    # the point of the masks: the loss is the mean over response tokens only
    ids, prompt_lens = _sft_cases()[0][1:3]
    inputs, targets = call(fn, ids.clone(), prompt_lens.clone(), pad_id=0)
    logits = torch.randn(*targets.shape, 20)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=IGNORE_INDEX)
    _, exp_targets = sft_labels_reference(ids, prompt_lens)
    keep = exp_targets != IGNORE_INDEX
    by_hand = -torch.log_softmax(logits, -1)[keep].gather(-1, exp_targets[keep][:, None]).mean()
    expect_close(loss, by_hand, "cross-entropy with your targets vs the mean over response tokens")
    return n + 1
