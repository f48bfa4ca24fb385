"""tfmlib.decoding: greedy decoding and beam search against brute force and step-by-step references."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tfmlib import Seq2SeqTransformer, TransformerConfig
from tfmlib.checks.translator import TableModel, make_table_model
from tfmlib.decoding import Hypothesis, beam_search, beam_search_step, greedy_decode, sequence_log_prob

BOS, EOS, PAD = 1, 2, 0


def tiny_model(seed=0, V_src=11, V_tgt=9):
    torch.manual_seed(seed)
    cfg = TransformerConfig.preset("tiny", src_vocab_size=V_src, tgt_vocab_size=V_tgt, dropout=0.0, max_len=20)
    model = Seq2SeqTransformer(cfg).eval()
    with torch.no_grad():  # varied, source-dependent outputs that sometimes end
        for layer in model.transformer.decoder.layers:
            layer.cross_attn.out_proj.weight.mul_(6.0)
        model.lm_head.weight.normal_(0.0, 1.0)
        model.lm_head.weight[[PAD, BOS]] = 0.0
    return model


def naive_greedy(model, src_row, max_len):
    """One source, the full model(src, prefix) re-run at every step, Python lists: the obvious version."""
    prefix = [BOS]
    with torch.no_grad():
        for _ in range(max_len):
            logits = model(src_row[None], torch.tensor([prefix]))[0, -1]
            prefix.append(int(logits.argmax()))
            if prefix[-1] == EOS:
                break
    return prefix[1:]


def strip(row):
    """Token list up to and with the first <eos>, without padding."""
    row = list(row)
    return row[:row.index(EOS) + 1] if EOS in row else [t for t in row if t != PAD]


def test_greedy_matches_naive_per_row_with_padded_sources():
    model = tiny_model()
    torch.manual_seed(1)
    src = torch.randint(4, 11, (6, 7))
    src[1, 3:] = PAD
    src[4, 5:] = PAD
    out = greedy_decode(model, src, BOS, EOS, max_len=12)
    assert out.dtype == torch.long and out.shape[0] == 6 and out.shape[1] <= 12
    for b in range(6):
        length = int((src[b] != PAD).sum())
        assert strip(out[b].tolist()) == naive_greedy(model, src[b, :length], 12)


def test_greedy_pads_after_eos_and_stops_when_all_rows_finished():
    model = make_table_model([3, 1, 5])
    out = greedy_decode(model, torch.tensor([[0], [1], [2]]), BOS, EOS, max_len=10, pad_id=PAD)
    assert out.shape == (3, 6)                           # the longest row needs 6 tokens (eos at step 5)
    ends = [row.index(EOS) for row in out.tolist()]
    assert ends == [3, 1, 5]
    for row, end in zip(out.tolist(), ends):
        assert all(t == PAD for t in row[end + 1:]) and PAD not in row[:end] and BOS not in row


def test_greedy_cuts_at_max_len_and_uses_config_pad_id():
    model = make_table_model([None, 0])
    out = greedy_decode(model, torch.tensor([[0], [1]]), BOS, EOS, max_len=4)
    assert out.shape == (2, 4) and EOS not in out[0].tolist() and out[1].tolist() == [EOS, PAD, PAD, PAD]


def test_beam_size_one_equals_greedy():
    model = tiny_model(seed=3)
    torch.manual_seed(2)
    src = torch.randint(4, 11, (5, 6))
    greedy = greedy_decode(model, src, BOS, EOS, max_len=10)
    beams = beam_search(model, src, BOS, EOS, max_len=10, beam_size=1)
    assert [b[0].tokens for b in beams] == [strip(row) for row in greedy.tolist()]


def test_hypothesis_scores_equal_sequence_log_prob():
    model = tiny_model(seed=4)
    torch.manual_seed(3)
    src = torch.randint(4, 11, (3, 5))
    beams = beam_search(model, src, BOS, EOS, max_len=8, beam_size=3, length_penalty=0.7)
    for b, hyps in enumerate(beams):
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        tokens = torch.tensor([h.tokens + [PAD] * (8 - len(h.tokens)) for h in hyps])
        log_p = sequence_log_prob(model, src[b:b + 1].expand(3, -1), tokens, BOS)
        for h, lp in zip(hyps, log_p.tolist()):
            assert math.isclose(h.log_prob, lp, abs_tol=1e-4)
            assert math.isclose(h.score, h.log_prob / len(h.tokens) ** 0.7, rel_tol=1e-6)


def all_sequences(V, max_len):
    """Every possible output: ends in <eos> within max_len, or runs to max_len without it."""
    words = [v for v in range(V) if v not in (PAD, BOS, EOS)]
    for n in range(max_len):
        for body in itertools.product(words, repeat=n):
            yield list(body) + [EOS]
    yield from (list(body) for body in itertools.product(words, repeat=max_len))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search(length_penalty):
    """With a beam as wide as the number of prefixes, beam search IS exhaustive search."""
    V, max_len = 5, 3
    model = make_table_model([None, None], V=V, seed=5)
    with torch.no_grad():
        model.table[..., EOS] = torch.randn(model.table.shape[:-1]) * 2  # <eos> competes at every step
    src = torch.tensor([[0], [1]])
    beams = beam_search(model, src, BOS, EOS, max_len=max_len, beam_size=V ** max_len, length_penalty=length_penalty)
    for b in range(2):
        candidates = list(all_sequences(V, max_len))
        tokens = torch.tensor([c + [PAD] * (max_len - len(c)) for c in candidates])
        log_p = sequence_log_prob(model, src[b:b + 1].expand(len(candidates), -1), tokens, BOS, pad_id=PAD)
        scores = [lp / len(c) ** length_penalty for lp, c in zip(log_p.tolist(), candidates)]
        best = max(range(len(candidates)), key=scores.__getitem__)
        assert beams[b][0].tokens == candidates[best]
        assert math.isclose(beams[b][0].score, scores[best], abs_tol=1e-5)


def test_beam_finds_what_greedy_misses():
    """Step 1: A (0.55) beats B (0.45); but every continuation of A is unlikely, B's is sure."""
    V, A, B_ = 6, 3, 4
    table = torch.full((1, 4, V, V), -30.0)
    table[0, 0, BOS, [A, B_]] = torch.tensor([0.55, 0.45]).log()
    table[0, 1, A, [3, 4, 5]] = torch.tensor([1 / 3] * 3).log()   # then three equally likely tokens
    table[0, 1, B_, 5] = 0.0                                      # then surely 5
    table[0, 2, :, EOS] = 0.0
    model = TableModel(table)
    src = torch.tensor([[0]])
    greedy = greedy_decode(model, src, BOS, EOS, max_len=3)
    best = beam_search(model, src, BOS, EOS, max_len=3, beam_size=2, length_penalty=0.0)[0][0]
    greedy_log_p = sequence_log_prob(model, src, greedy, BOS).item()
    assert greedy[0, 0].item() == A and best.tokens == [B_, 5, EOS]
    assert math.isclose(best.log_prob, math.log(0.45), abs_tol=1e-5)
    assert math.isclose(greedy_log_p, math.log(0.55 / 3), abs_tol=1e-5) and best.log_prob > greedy_log_p


def test_batched_beam_search_equals_one_source_at_a_time():
    model = tiny_model(seed=6)
    torch.manual_seed(4)
    src = torch.randint(4, 11, (4, 6))
    together = beam_search(model, src, BOS, EOS, max_len=9, beam_size=3)
    for b in range(4):
        alone = beam_search(model, src[b:b + 1], BOS, EOS, max_len=9, beam_size=3)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in together[b]]
        assert all(math.isclose(x.log_prob, y.log_prob, abs_tol=1e-4) for x, y in zip(alone, together[b]))


def test_beam_search_step_against_brute_force():
    torch.manual_seed(0)
    log_probs = F.log_softmax(torch.randn(3, 4, 7), -1)
    beam_scores = -torch.rand(3, 4) * 2
    scores, beam_idx, token_idx = beam_search_step(log_probs, beam_scores, 5)
    for b in range(3):
        cands = sorted(((beam_scores[b, k] + log_probs[b, k, v]).item(), k, v) for k in range(4) for v in range(7))[::-1][:5]
        assert [(k, v) for _, k, v in cands] == list(zip(beam_idx[b].tolist(), token_idx[b].tolist()))
        torch.testing.assert_close(scores[b], torch.tensor([s for s, _, _ in cands]))


def test_hypothesis_repr_is_rounded():
    assert repr(Hypothesis([3, 2], -0.123456789, -0.0617)) == "Hypothesis(tokens=[3, 2], log_prob=-0.1235, score=-0.0617)"


def test_bad_input_is_explained():
    model = tiny_model()
    src = torch.randint(4, 11, (2, 5))
    with pytest.raises(ValueError, match="max_len=30 is too long"):
        greedy_decode(model, src, BOS, EOS, max_len=30)
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        beam_search(model, src, BOS, EOS, max_len=0)
    with pytest.raises(ValueError, match="beam_size must be a positive integer"):
        beam_search(model, src, BOS, EOS, max_len=5, beam_size=0)
    with pytest.raises(TypeError, match="integer tensor of token ids"):
        greedy_decode(model, src.float(), BOS, EOS, max_len=5)
    with pytest.raises(ValueError, match="2 dimensions"):
        greedy_decode(model, src[0], BOS, EOS, max_len=5)
    with pytest.raises(TypeError, match="encode"):
        greedy_decode(torch.nn.Linear(2, 2), src, BOS, EOS, max_len=5)
