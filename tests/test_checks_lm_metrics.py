"""The lesson-10 checks of the bigram baseline and bits per character catch realistic wrong
implementations, with the right hint, and pass the reference."""
import math

import torch

import tfmlib.checks.lm_metrics as ck
from tfmlib.lm_metrics import bigram_cross_entropy, bits_per_char


def stub(*args, **kwargs):
    raise NotImplementedError("write your code here")


def assert_fails(result, hint_text):
    assert result.status == "failed", repr(result)
    assert hint_text in repr(result), f"expected hint {hint_text!r} in:\n{result!r}"


def bigram(train_ids, eval_ids, V, alpha=1.0, smooth=True, denominator="alpha_v", dim=1, reverse=False,
           score_on=None, log=torch.log):
    prev, nxt = (train_ids[1:], train_ids[:-1]) if reverse else (train_ids[:-1], train_ids[1:])
    counts = torch.zeros(V, V)
    counts.index_put_((prev, nxt), torch.ones(len(prev)), accumulate=True)
    numerator = counts + (alpha if smooth else 0)
    total = numerator.sum(dim, keepdim=True) if denominator == "alpha_v" else counts.sum(dim, keepdim=True) + alpha
    ids = eval_ids if score_on is None else score_on
    return -log(numerator / total)[ids[:-1], ids[1:]].mean()


def test_bigram_reference_stub_and_wrong_versions():
    assert ck.check_bigram_cross_entropy(bigram_cross_entropy).passed
    assert ck.check_bigram_cross_entropy(bigram).passed                   # float32, by hand: still passes
    assert ck.check_bigram_cross_entropy(stub).status == "not implemented"
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a, smooth=False)),
                 ck.HINT_BIGRAM_NO_SMOOTHING)
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a, denominator="alpha")),
                 ck.HINT_BIGRAM_DENOMINATOR)
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a, dim=0)),
                 ck.HINT_BIGRAM_COLUMNS)
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a, reverse=True)),
                 ck.HINT_BIGRAM_REVERSED)
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a, score_on=t)),
                 ck.HINT_BIGRAM_ON_TRAIN)
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a, log=torch.log2)),
                 ck.HINT_BIGRAM_BITS)

    def unigram(t, e, V, a):
        counts = torch.bincount(t, minlength=V).float() + a
        return -(counts / counts.sum()).log()[e].mean()
    assert_fails(ck.check_bigram_cross_entropy(unigram), ck.HINT_BIGRAM_UNIGRAM)
    assert_fails(ck.check_bigram_cross_entropy(lambda t, e, V, a: bigram(t, e, V, a).repeat(3)),
                 ck.HINT_NOT_A_NUMBER)


def test_bits_per_char_reference_stub_and_wrong_versions():
    assert ck.check_bits_per_char(bits_per_char).passed
    assert ck.check_bits_per_char(lambda loss, t, c: torch.tensor(loss * t / c / math.log(2))).passed
    assert ck.check_bits_per_char(stub).status == "not implemented"
    assert_fails(ck.check_bits_per_char(lambda loss, t, c: loss * t / c), ck.HINT_BPC_NO_LN2)
    assert_fails(ck.check_bits_per_char(lambda loss, t, c: loss * t / c * math.log(2)), ck.HINT_BPC_TIMES_LN2)
    assert_fails(ck.check_bits_per_char(lambda loss, t, c: loss * c / t / math.log(2)), ck.HINT_BPC_INVERTED)
    assert_fails(ck.check_bits_per_char(lambda loss, t, c: loss / math.log(2)), ck.HINT_BPC_NO_RATIO)
    assert_fails(ck.check_bits_per_char(lambda loss, t, c: None), ck.HINT_NOT_A_NUMBER)
