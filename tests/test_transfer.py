"""tfmlib.transfer: balanced draws, accuracy, a logistic-regression head, vocabulary compaction that leaves
a model's function and gradients unchanged, training a whole classifier, and few-shot curves."""
import pytest
import torch
import torch.nn.functional as F

from tfmlib.bert import EncoderClassifier, EncoderConfig
from tfmlib.transfer import (accuracy, balanced_subset, compact_vocabulary, few_shot_curve, train_classifier,
                             train_head)

from helpers import assert_close


def _tiny_config(vocab_size: int, **overrides) -> EncoderConfig:
    fields = dict(vocab_size=vocab_size, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=16, dropout=0.0,
                  n_classes=3, pooling="mean", pad_id=0)
    return EncoderConfig(**{**fields, **overrides})


# ------------------------------------------------------------------------------------ balanced_subset
def test_balanced_subset_draws_n_of_each_class_without_replacement_and_by_seed():
    labels = torch.tensor([0, 1, 2] * 10 + [2] * 5)
    idx = balanced_subset(labels, 4, seed=0)
    assert idx.shape == (12,) and len(set(idx.tolist())) == 12
    assert torch.bincount(labels[idx]).tolist() == [4, 4, 4]
    assert torch.equal(idx, balanced_subset(labels, 4, seed=0))
    assert not torch.equal(idx, balanced_subset(labels, 4, seed=1))
    assert sorted(balanced_subset(labels, 10, seed=5)[:10].tolist()) == list(range(0, 30, 3))  # all of class 0


def test_balanced_subset_errors():
    labels = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="class 1 has 1 examples, fewer than n_per_class=2"):
        balanced_subset(labels, 2)
    with pytest.raises(ValueError, match="n_per_class must be a positive integer"):
        balanced_subset(labels, 0)
    with pytest.raises(TypeError, match="labels"):
        balanced_subset(labels.float(), 1)


# ------------------------------------------------------------------------------------------- accuracy
def test_accuracy_by_hand_and_errors():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == 0.5
    with pytest.raises(ValueError, match="logits has 4 rows but labels 3"):
        accuracy(logits, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="logits"):
        accuracy(logits[0], torch.tensor([0]))


# ------------------------------------------------------------------------------------------ train_head
def test_train_head_fits_separable_features_is_seeded_and_equals_a_hand_written_loop():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 3
    labels = torch.arange(3).repeat(10)                          # (30,)
    features = centers[labels] + 0.3 * torch.randn(30, 8, generator=g)
    head = train_head(features, labels, n_classes=3, steps=50, lr=3e-2, seed=1)
    assert isinstance(head, torch.nn.Linear) and not head.training
    assert accuracy(head(features), labels) == 1.0
    again = train_head(features, labels, n_classes=3, steps=50, lr=3e-2, seed=1)
    assert torch.equal(head.weight, again.weight)

    # the same logistic regression written out: default init from the seed, then full-batch AdamW
    bound = 8 ** -0.5
    weight = (torch.rand(3, 8, generator=torch.Generator().manual_seed(1)) * 2 * bound - bound).requires_grad_()
    bias = torch.zeros(3, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=3e-2, weight_decay=0.0)
    for _ in range(50):
        loss = F.cross_entropy(features @ weight.T + bias, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert_close(head.weight.detach(), weight.detach(), atol=1e-5, what="head weight")
    assert_close(head.bias.detach(), bias.detach(), atol=1e-5, what="head bias")


def test_train_head_errors():
    with pytest.raises(ValueError, match="features has 4 rows but labels 3"):
        train_head(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="n_classes must be a positive integer"):
        train_head(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="features"):
        train_head(torch.zeros(3), torch.zeros(3, dtype=torch.long), 2)


# ---------------------------------------------------------------------------------- compact_vocabulary
def test_compact_vocabulary_renumbers_and_maps_back():
    a = torch.tensor([[5, 9, 0], [7, 5, 0]])
    b = torch.tensor([[42, 9]])
    (ca, cb), kept = compact_vocabulary(a, b)
    assert kept.tolist() == [0, 5, 7, 9, 42]
    assert ca.tolist() == [[1, 3, 0], [2, 1, 0]] and cb.tolist() == [[4, 3]]
    assert torch.equal(kept[ca], a) and torch.equal(kept[cb], b)
    (only,), kept = compact_vocabulary(torch.tensor([[3, 4]]))     # no padding in the ids: pad 0 kept anyway
    assert kept.tolist() == [0, 3, 4] and only.tolist() == [[1, 2]]


def test_compact_vocabulary_errors():
    with pytest.raises(ValueError, match="pad_id=5 must be the smallest id"):
        compact_vocabulary(torch.tensor([[3, 5]]), pad_id=5)
    with pytest.raises(ValueError, match="must be non-negative, got -1"):
        compact_vocabulary(torch.tensor([[3, -1]]))
    with pytest.raises(TypeError, match=r"ids\[1\]"):
        compact_vocabulary(torch.tensor([1]), torch.tensor([1.0]))


def test_a_compacted_model_computes_the_same_function_and_gradients():
    """Dropping unused embedding rows changes nothing: same logits, same gradients on every kept row,
    and the dropped rows of the full model get no gradient at all."""
    torch.manual_seed(0)
    full = EncoderClassifier(_tiny_config(vocab_size=50))
    ids = torch.tensor([[3, 17, 17, 8, 0], [44, 3, 9, 0, 0]])
    labels = torch.tensor([2, 0])
    (small_ids,), kept = compact_vocabulary(ids)
    small = EncoderClassifier(_tiny_config(vocab_size=len(kept)))
    state = full.state_dict()
    state["tok_embed.embedding.weight"] = state["tok_embed.embedding.weight"][kept]
    small.load_state_dict(state)
    full_logits, small_logits = full(ids), small(small_ids)
    assert_close(small_logits, full_logits, atol=1e-6, what="logits")
    F.cross_entropy(full_logits, labels).backward()
    F.cross_entropy(small_logits, labels).backward()
    full_grad = full.tok_embed.embedding.weight.grad
    assert_close(small.tok_embed.embedding.weight.grad, full_grad[kept], atol=1e-6, what="kept rows' gradient")
    dropped = torch.ones(50, dtype=torch.bool)
    dropped[kept] = False
    assert full_grad[dropped].abs().max() == 0
    for (name, p), (_, q) in zip(full.named_parameters(), small.named_parameters()):
        if name != "tok_embed.embedding.weight":
            assert_close(q.grad, p.grad, atol=1e-6, what=f"grad of {name}")


# ------------------------------------------------------------------------------------ train_classifier
def _token_task(n: int = 24):
    """Label = which of three marker tokens (1, 2, 3) the sequence contains; the rest is noise (4..11)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(n // 3)
    ids = torch.randint(4, 12, (n, 6), generator=g)
    ids[torch.arange(n), torch.randint(0, 6, (n,), generator=g)] = labels + 1
    ids[::4, -1] = 0                                           # some padding
    return ids, labels


def test_train_classifier_takes_its_steps_and_fits_an_easy_task():
    ids, labels = _token_task()
    torch.manual_seed(0)
    model = EncoderClassifier(_tiny_config(vocab_size=12))
    history = train_classifier(model, ids, labels, steps=60, lr=3e-3, batch_size=8, device="cpu")
    assert history.steps == list(range(1, 61)) and history.loss[-1] < history.loss[0] / 5
    assert history.evals[-1]["train_accuracy"] == 1.0
    model.eval()
    with torch.no_grad():
        assert accuracy(model(ids), labels) == 1.0


def test_train_classifier_is_seeded_and_trains_with_gradients_switched_off():
    ids, labels = _token_task()
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = EncoderClassifier(_tiny_config(vocab_size=12, d_model=8, n_heads=1, n_layers=1, d_ff=8))
        with torch.no_grad():                                  # a lesson may have switched gradients off
            history = train_classifier(model, ids, shuffled, steps=7, lr=1e-3, seed=3, device="cpu")
        runs.append((history.loss, model.head.weight.detach()))
    assert len(runs[0][0]) == 7 and runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_train_classifier_errors():
    ids, labels = _token_task()
    model = EncoderClassifier(_tiny_config(vocab_size=12))
    with pytest.raises(ValueError, match="ids has 24 rows but labels 23"):
        train_classifier(model, ids, labels[:-1])
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_classifier(model, ids, labels, steps=0)
    with pytest.raises(TypeError, match="ids"):
        train_classifier(model, ids.float(), labels)


# ------------------------------------------------------------------------------------- few_shot_curve
def test_few_shot_curve_collects_each_count_and_seed_on_balanced_draws():
    labels = torch.tensor([0, 1] * 8)
    calls = []

    def run(idx, seed):
        calls.append((len(idx), seed))
        assert torch.bincount(labels[idx]).tolist() == [len(idx) // 2] * 2
        assert torch.equal(idx, balanced_subset(labels, len(idx) // 2, seed))
        return {"size": len(idx), "seed": seed}

    curves = few_shot_curve(run, labels, counts=[1, 2, 4], seeds=[0, 7])
    assert calls == [(2, 0), (2, 7), (4, 0), (4, 7), (8, 0), (8, 7)]
    assert curves["size"].tolist() == [[2, 2], [4, 4], [8, 8]] and curves["seed"].tolist() == [[0, 7]] * 3


def test_few_shot_curve_errors():
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="at least one count"):
        few_shot_curve(lambda idx, seed: {}, labels, counts=[])
    with pytest.raises(TypeError, match="run must return a dict"):
        few_shot_curve(lambda idx, seed: 0.5, labels, counts=[1])


def test_accuracy_and_few_shot_curve_name_bad_input():
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="accuracy of no examples"):
        accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match=r"counts must be a list of ints, got int 4: write counts=\[4\]"):
        few_shot_curve(lambda idx, seed: {"a": 1.0}, labels, counts=4)
    with pytest.raises(TypeError, match=r"seeds must be a list of ints, got int 0: write seeds=\[0\]"):
        few_shot_curve(lambda idx, seed: {"a": 1.0}, labels, counts=[1], seeds=0)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor, got list"):
        few_shot_curve(lambda idx, seed: {"a": 1.0}, [0, 0, 1, 1], counts=[1])
    with pytest.raises(TypeError, match=r"one number per name, got 'a': shape \(2, 2\)"):
        few_shot_curve(lambda idx, seed: {"a": torch.zeros(2, 2)}, labels, counts=[1])
    curve = few_shot_curve(lambda idx, seed: {"a": torch.tensor(0.5), "b": 1}, labels, counts=[1, 2])
    assert curve["a"].tolist() == [[0.5], [0.5]] and curve["b"].tolist() == [[1.0], [1.0]]
