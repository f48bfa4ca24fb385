"""The lesson-10 checks catch realistic wrong implementations, with the right hint,
and pass the reference solution."""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_fails, stub
import tfmlib.checks.gpt as ck
from tfmlib.gpt import sampling_probs, top_k_filter, top_p_filter

NEG_INF = float("-inf")


# ---------------------------------------------------------------- top-k

def topk_good(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def topk_plus_one(logits, k):  # keeps everything above the (k+1)-th
    kth = torch.topk(logits, min(k + 1, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def topk_strict(logits, k):  # > instead of >=: drops the k-th itself
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, NEG_INF)


def topk_smallest(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1, largest=False).values[..., -1:]
    return logits.masked_fill(logits > kth, NEG_INF)


def topk_scatter(logits, k):  # exactly k indices: loses tied tokens
    idx = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, NEG_INF)


def topk_zero(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def topk_no_clamp(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def test_top_k_reference_and_stub():
    assert ck.check_top_k_filter(topk_good).passed
    assert ck.check_top_k_filter(top_k_filter).passed
    assert ck.check_top_k_filter(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (topk_plus_one, ck.HINT_K_PLUS_ONE), (topk_strict, ck.HINT_K_MINUS_ONE), (topk_smallest, ck.HINT_K_SMALLEST),
    (topk_scatter, ck.HINT_K_TIES), (topk_zero, ck.HINT_FILL_ZERO), (topk_no_clamp, "selected index k out of range"),
])
def test_top_k_wrong(wrong, hint):
    assert_fails(ck.check_top_k_filter(wrong), hint)


# ---------------------------------------------------------------- top-p

def topp_good(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)


def topp_excludes_crossing(logits, p):  # the usual bug: drops the token that crosses p
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    drop = sorted_logits.softmax(-1).cumsum(-1) > p
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)


def topp_unsorted(logits, p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, NEG_INF)


def topp_ascending(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)


def topp_of_logits(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    drop = sorted_logits.cumsum(-1) - sorted_logits >= p
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)


def topp_strict(logits, p):  # > instead of >=: one token too many on a boundary
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs > p
    return logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)


def topp_no_unsort(logits, p):  # forgets to scatter the mask back to vocabulary order
    sorted_logits, _ = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, NEG_INF)


def test_top_p_reference_and_stub():
    assert ck.check_top_p_filter(topp_good).passed
    assert ck.check_top_p_filter(top_p_filter).passed
    assert ck.check_top_p_filter(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (topp_excludes_crossing, ck.HINT_P_EXCLUDES_CROSSING), (topp_unsorted, ck.HINT_P_UNSORTED),
    (topp_ascending, ck.HINT_P_ASCENDING), (topp_of_logits, ck.HINT_P_LOGITS), (topp_strict, ck.HINT_P_KEEPS_ONE_MORE),
    (topp_no_unsort, "values differ"),
])
def test_top_p_wrong(wrong, hint):
    assert_fails(ck.check_top_p_filter(wrong), hint)


# ---------------------------------------------------------------- sampling_probs

def probs_good(logits, temperature, top_k=None, top_p=None):
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits.softmax(-1)


def probs_filter_first(logits, temperature, top_k=None, top_p=None):
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return (logits / temperature).softmax(-1)


def probs_multiply(logits, temperature, top_k=None, top_p=None):
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return sampling_probs(logits * temperature ** 2, temperature, top_k, top_p)  # = filters on logits * T


def probs_not_renormalised(logits, temperature, top_k=None, top_p=None):
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    probs = (logits / temperature).softmax(-1)
    kept = sampling_probs(logits, temperature, top_k, top_p) > 0
    return probs * kept


def probs_divide_by_zero(logits, temperature, top_k=None, top_p=None):
    return probs_good(logits, temperature, top_k, top_p) if temperature else (logits / temperature).softmax(-1)


def test_sampling_probs_reference_and_stub():
    assert ck.check_sampling_probs(probs_good).passed
    assert ck.check_sampling_probs(sampling_probs).passed
    assert ck.check_sampling_probs(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (probs_filter_first, ck.HINT_FILTER_BEFORE_TEMPERATURE), (probs_multiply, ck.HINT_TEMPERATURE_MULTIPLY),
    (probs_not_renormalised, ck.HINT_NOT_RENORMALISED), (probs_divide_by_zero, ck.HINT_GREEDY),
])
def test_sampling_probs_wrong(wrong, hint):
    assert_fails(ck.check_sampling_probs(wrong), hint)


# ---------------------------------------------------------------- sft_labels

def sft_good(ids, prompt_lens, pad_id=0):
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, :n - 1] = -100
    targets[targets == pad_id] = -100
    return inputs, targets


def sft_masks_response(ids, prompt_lens, pad_id=0):
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, n - 1:] = -100
    return inputs, targets


def sft_off_by_one(ids, prompt_lens, pad_id=0):  # masks targets[:n] instead of targets[:n-1]
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, :n] = -100
    targets[targets == pad_id] = -100
    return inputs, targets


def sft_keeps_padding(ids, prompt_lens, pad_id=0):
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, :n - 1] = -100
    return inputs, targets


def sft_zero(ids, prompt_lens, pad_id=0):
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, :n - 1] = 0
    return inputs, targets


def sft_no_shift(ids, prompt_lens, pad_id=0):
    targets = ids.clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, :n] = -100
    targets[targets == pad_id] = -100
    return ids, targets


def test_sft_labels_reference_and_stub():
    assert ck.check_sft_labels(sft_good).passed
    assert ck.check_sft_labels(ck.sft_labels_reference).passed
    assert ck.check_sft_labels(stub).status == "not implemented"


@pytest.mark.parametrize("wrong, hint", [
    (sft_masks_response, ck.HINT_MASKED_RESPONSE), (sft_off_by_one, ck.HINT_OFF_BY_ONE),
    (sft_keeps_padding, ck.HINT_PADDING), (sft_zero, ck.HINT_ZERO_NOT_IGNORE), (sft_no_shift, ck.HINT_NO_SHIFT),
])
def test_sft_labels_wrong(wrong, hint):
    assert_fails(ck.check_sft_labels(wrong), hint)


def sft_pad_zero(ids, prompt_lens, pad_id=0):  # hard-codes 0 as the padding id
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    for b, n in enumerate(prompt_lens.tolist()):
        targets[b, :n - 1] = -100
    targets[targets == 0] = -100
    return inputs, targets


def sft_float_targets(ids, prompt_lens, pad_id=0):  # right values, float dtype: F.cross_entropy would fail
    inputs, targets = sft_good(ids, prompt_lens, pad_id)
    return inputs, targets.float()


@pytest.mark.parametrize("wrong, hint, message", [
    (sft_pad_zero, ck.HINT_PAD_ID, "pad_id=2"),
    (sft_float_targets, ck.HINT_TARGETS_DTYPE, "dtype torch.float32, expected torch.long"),
])
def test_sft_labels_pad_id_and_dtype(wrong, hint, message):
    result = ck.check_sft_labels(wrong)
    assert_fails(result, hint)
    assert message in result.message
    assert "use the pad_id argument, not 0" in ck.HINT_PAD_ID
