"""The lesson 09 checks: the reference passes, a stub is "not implemented", and each realistic
wrong implementation fails with the hint that names its mistake."""
import pytest
import torch
import torch.nn.functional as F

from helpers import verdict
from tfmlib.checks.translator import check_beam_search_step, check_greedy_decode, check_label_smoothed_loss


# ------------------------------------------------------------ label_smoothed_loss
def loss_reference(logits, targets, eps, pad_id):
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    per_token = (1 - eps) * nll + eps * -log_probs.mean(-1)
    keep = targets != pad_id
    return (per_token * keep).sum() / keep.sum()


def loss_as_distribution(logits, targets, eps, pad_id):
    """Also right: build the smoothed target distribution q and take -sum q log p."""
    V = logits.shape[-1]
    q = torch.full_like(logits, eps / V).scatter_add(-1, targets[..., None], torch.full_like(logits[..., :1], 1 - eps))
    per_token = -(q * F.log_softmax(logits, -1)).sum(-1)
    return per_token[targets != pad_id].mean()


def loss_stub(logits, targets, eps, pad_id):
    raise NotImplementedError("Smooth, then average.")


def loss_pad_scored(logits, targets, eps, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=eps)


def loss_divides_by_all(logits, targets, eps, pad_id):
    log_probs = F.log_softmax(logits, -1)
    per_token = (1 - eps) * -log_probs.gather(-1, targets[..., None]).squeeze(-1) + eps * -log_probs.mean(-1)
    return (per_token * (targets != pad_id)).sum() / targets.numel()


def loss_v_minus_1(logits, targets, eps, pad_id):
    V = logits.shape[-1]
    q = torch.full_like(logits, eps / (V - 1)).scatter(-1, targets[..., None], 1 - eps)
    per_token = -(q * F.log_softmax(logits, -1)).sum(-1)
    return per_token[targets != pad_id].mean()


def loss_annotated_transformer(logits, targets, eps, pad_id):
    """Zeroes the pad column of the smoothed distribution (and renormalises over the V - 1 others)."""
    V = logits.shape[-1]
    q = torch.full_like(logits, eps / (V - 1))
    q[..., pad_id] = 0.0
    q = q.scatter(-1, targets[..., None], 1 - eps + eps / (V - 1))
    per_token = -(q * F.log_softmax(logits, -1)).sum(-1)
    return per_token[targets != pad_id].mean()


def loss_no_one_minus(logits, targets, eps, pad_id):
    log_probs = F.log_softmax(logits, -1)
    per_token = -log_probs.gather(-1, targets[..., None]).squeeze(-1) + eps * -log_probs.mean(-1)
    return per_token[targets != pad_id].mean()


def loss_no_smoothing(logits, targets, eps, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)


def loss_summed(logits, targets, eps, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id, label_smoothing=eps,
                           reduction="sum")


def loss_no_log_softmax(logits, targets, eps, pad_id):
    per_token = (1 - eps) * -logits.gather(-1, targets[..., None]).squeeze(-1) + eps * -logits.mean(-1)
    return per_token[targets != pad_id].mean()


def loss_item(logits, targets, eps, pad_id):
    return loss_reference(logits, targets, eps, pad_id).item()


def loss_per_token(logits, targets, eps, pad_id):
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=pad_id, label_smoothing=eps, reduction="none")


def loss_detached(logits, targets, eps, pad_id):
    return loss_reference(logits.detach(), targets, eps, pad_id)


def test_label_smoothed_loss_reference_and_stub():
    verdict(check_label_smoothed_loss(loss_reference), "passed")
    verdict(check_label_smoothed_loss(loss_as_distribution), "passed")
    verdict(check_label_smoothed_loss(loss_stub), "not implemented")


@pytest.mark.parametrize("fn, hint", [
    (loss_pad_scored, "padding is scored"),
    (loss_divides_by_all, "divide by the number of NON-pad targets"),
    (loss_v_minus_1, "not eps / (V - 1)"),
    (loss_annotated_transformer, "keep the pad class in the uniform part"),
    (loss_no_one_minus, "multiply the one-hot part by (1 - eps)"),
    (loss_no_smoothing, "eps is ignored"),
    (loss_summed, "a mean, not a sum"),
    (loss_no_log_softmax, "log_softmax over the last axis"),
    (loss_item, "expected a torch.Tensor"),
    (loss_per_token, "expected a scalar"),
    (loss_detached, "keep the computation differentiable"),
])
def test_label_smoothed_loss_mistakes(fn, hint):
    verdict(check_label_smoothed_loss(fn), "failed", hint)


# ------------------------------------------------------------ beam_search_step
def step_reference(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    scores, idx = (beam_scores[:, :, None] + log_probs).reshape(B, K * V).topk(beam_size, dim=-1)
    return scores, idx // V, idx % V


def step_by_sorting(log_probs, beam_scores, beam_size):
    """Also right: a full descending sort instead of topk."""
    B, K, V = log_probs.shape
    scores, idx = (beam_scores.unsqueeze(-1) + log_probs).flatten(1).sort(dim=-1, descending=True)
    scores, idx = scores[:, :beam_size], idx[:, :beam_size]
    return scores, torch.div(idx, V, rounding_mode="floor"), idx.remainder(V)


def step_stub(log_probs, beam_scores, beam_size):
    raise NotImplementedError("Add, flatten, topk.")


def step_forgets_scores(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    scores, idx = log_probs.reshape(B, K * V).topk(beam_size, dim=-1)
    return scores, idx // V, idx % V


def step_best_token_per_beam(log_probs, beam_scores, beam_size):
    scores, tokens = (beam_scores[:, :, None] + log_probs).max(dim=-1)
    beams = torch.arange(log_probs.shape[1]).expand_as(tokens)
    return scores, beams, tokens


def step_topk_per_beam(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    scores, tokens = (beam_scores[:, :, None] + log_probs).topk(beam_size, dim=-1)   # (B, K, beam_size)
    beams = torch.arange(K)[:, None].expand(K, beam_size).reshape(-1)
    return scores.reshape(B, -1)[:, :beam_size], beams[:beam_size].expand(B, -1), tokens.reshape(B, -1)[:, :beam_size]


def step_index_by_k(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    scores, idx = (beam_scores[:, :, None] + log_probs).reshape(B, K * V).topk(beam_size, dim=-1)
    return scores, idx % K, idx // K


def step_over_batch(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    scores, idx = (beam_scores[:, :, None] + log_probs).reshape(-1).topk(beam_size)
    return scores, (idx % (K * V)) // V, idx % V


def step_ascending(log_probs, beam_scores, beam_size):
    scores, beams, tokens = step_reference(log_probs, beam_scores, beam_size)
    return scores.flip(-1), beams.flip(-1), tokens.flip(-1)


def step_multiplied(log_probs, beam_scores, beam_size):
    B, K, V = log_probs.shape
    scores, idx = (beam_scores[:, :, None] * log_probs).reshape(B, K * V).topk(beam_size, dim=-1)
    return scores, idx // V, idx % V


def step_uses_k(log_probs, beam_scores, beam_size):
    return step_reference(log_probs, beam_scores, log_probs.shape[1])


def step_true_division(log_probs, beam_scores, beam_size):
    scores, idx = (beam_scores[:, :, None] + log_probs).flatten(1).topk(beam_size, dim=-1)
    return scores, idx / log_probs.shape[-1], idx % log_probs.shape[-1]


def test_beam_search_step_reference_and_stub():
    verdict(check_beam_search_step(step_reference), "passed")
    verdict(check_beam_search_step(step_by_sorting), "passed")
    verdict(check_beam_search_step(step_stub), "not implemented")


@pytest.mark.parametrize("fn, hint", [
    (step_forgets_scores, "add the previous beam scores"),
    (step_best_token_per_beam, "not the best tokens of each beam separately"),
    (step_topk_per_beam, "not the best tokens of each beam separately"),
    (step_index_by_k, "beam i // V and token i % V"),
    (step_over_batch, "keep sources apart"),
    (step_ascending, "best first"),
    (step_multiplied, "log-probabilities add"),
    (step_uses_k, "return beam_size candidates per source"),
    (step_true_division, "integer division"),
    (lambda lp, bs, k: step_reference(lp, bs, k)[:2], "return three tensors"),
])
def test_beam_search_step_mistakes(fn, hint):
    verdict(check_beam_search_step(fn), "failed", hint)


# ------------------------------------------------------------ greedy_decode
def greedy(model, src, bos_id, eos_id, max_len, pad_id=0, *, bug=None):
    """The reference loop; ``bug`` switches on one typical mistake."""
    memory, src_mask = model.encode(src)
    B = src.shape[0]
    decoder_in = torch.full((B, 1), bos_id, dtype=torch.long)
    finished = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len + 1 if bug == "one_more" else max_len):
        if bug == "last_token_only":
            logits = model.decode(decoder_in[:, -1:], memory, src_mask)[:, -1]
        else:
            logits = model.decode(decoder_in, memory, src_mask)[:, 0 if bug == "first_position" else -1]
        next_token = logits.argmax(-1)
        if bug not in ("no_finished_mask", "never_stops"):
            next_token = next_token.masked_fill(finished, eos_id if bug == "eos_fill" else pad_id)
        if bug == "drops_eos":
            next_token = next_token.masked_fill(next_token == eos_id, pad_id)
            finished |= logits.argmax(-1) == eos_id
        else:
            finished |= next_token == eos_id
        decoder_in = torch.cat([decoder_in, next_token[:, None]], dim=1)
        if bug == "never_stops":
            continue
        if (finished.any() if bug == "stops_at_first" else finished.all()):
            break
    return decoder_in if bug == "keeps_bos" else decoder_in[:, 1:]


def greedy_full_width(model, src, bos_id, eos_id, max_len, pad_id=0):
    """Also right: no early stop, always max_len columns, re-running the whole model each step."""
    B = src.shape[0]
    decoder_in = torch.full((B, 1), bos_id, dtype=torch.long)
    finished = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        token = model(src, decoder_in)[:, -1].argmax(-1)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        finished = finished | (token == eos_id)
        decoder_in = torch.cat([decoder_in, token[:, None]], dim=1)
    return decoder_in[:, 1:]


def greedy_stub(model, src, bos_id, eos_id, max_len, pad_id=0):
    raise NotImplementedError("Encode once, then loop.")


def _bug(name):
    def fn(model, src, bos_id, eos_id, max_len, pad_id=0):
        return greedy(model, src, bos_id, eos_id, max_len, pad_id, bug=name)
    return fn


def test_greedy_decode_reference_and_stub():
    verdict(check_greedy_decode(greedy), "passed")
    verdict(check_greedy_decode(greedy_full_width), "passed")
    verdict(check_greedy_decode(greedy_stub), "not implemented")


@pytest.mark.parametrize("bug, hint", [
    ("no_finished_mask", "every later position must hold pad_id"),
    ("never_stops", "every later position must hold pad_id"),
    ("stops_at_first", "when EVERY row has finished"),
    ("keeps_bos", "drop the <bos> column"),
    ("first_position", "the LAST position"),
    ("last_token_only", "the whole prefix"),
    ("drops_eos", "keep the <eos> token itself"),
    ("eos_fill", "write pad_id (not <eos> again)"),
    ("one_more", "at most max_len tokens"),
])
def test_greedy_decode_mistakes(bug, hint):
    verdict(check_greedy_decode(_bug(bug)), "failed", hint)


def test_greedy_decode_float_tokens_and_wrong_shape():
    verdict(check_greedy_decode(lambda *a: greedy(*a).float()), "failed", "integer token ids")
    verdict(check_greedy_decode(lambda *a: greedy(*a).flatten()), "failed", "one row of token ids per source")
