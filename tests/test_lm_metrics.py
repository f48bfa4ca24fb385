"""tfmlib.lm_metrics: the n-gram baselines equal F.cross_entropy of the count tables and a brute-force
count; bits per character is the same text's cost whatever the tokenizer."""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from tfmlib.lm_metrics import bigram_cross_entropy, bits_per_char, unigram_cross_entropy


def streams(seed=0, V=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (500,), generator=g), torch.randint(0, V, (120,), generator=g), V


def test_bigram_equals_cross_entropy_of_the_count_table():
    train, val, V = streams()
    alpha = 0.5
    counts = torch.full((V, V), alpha, dtype=torch.float64)
    for a, b in zip(train.tolist(), train[1:].tolist()):
        counts[a, b] += 1
    logits = counts.log()                                      # softmax(log counts) = counts / row sum
    expected = F.cross_entropy(logits[val[:-1]], val[1:])
    assert bigram_cross_entropy(train, val, V, alpha) == pytest.approx(expected.item(), rel=1e-12)


def test_unigram_equals_brute_force():
    train, val, V = streams(1)
    freq = Counter(train.tolist())
    log_p = {s: math.log((freq[s] + 1) / (len(train) + V)) for s in range(V)}
    expected = -sum(log_p[s] for s in val.tolist()) / len(val)
    assert unigram_cross_entropy(train, val, V) == pytest.approx(expected, rel=1e-12)


def test_context_helps_on_structured_text_and_smoothing_keeps_it_finite():
    ids = torch.arange(6).repeat(100)                          # 0 1 2 3 4 5 0 1 ...: each id fixes the next
    assert bigram_cross_entropy(ids, ids, 6) < 0.05 < unigram_cross_entropy(ids, ids, 6)
    unseen = torch.tensor([0, 2, 4])                           # pairs never seen in training
    assert math.isfinite(bigram_cross_entropy(ids, unseen, 6, alpha=1e-3))


def test_bits_per_char():
    assert bits_per_char(math.log(2), 10, 10) == pytest.approx(1.0)
    assert bits_per_char(2.0, 50, 100) == pytest.approx(1.0 / math.log(2))  # 2 nats per 2-character token
    with pytest.raises(ValueError, match="positive"):
        bits_per_char(1.0, 0, 5)


def test_bad_input_names_the_argument():
    train, val, V = streams()
    with pytest.raises(ValueError, match=r"eval_ids must lie in \[0, 6\]"):
        bigram_cross_entropy(train, val + 1, V)
    with pytest.raises(ValueError, match="eval_ids needs at least 2 ids"):
        bigram_cross_entropy(train, val[:1], V)
    with pytest.raises((TypeError, ValueError), match="train_ids"):
        unigram_cross_entropy(train.float(), val, V)
