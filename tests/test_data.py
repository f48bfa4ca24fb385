"""tfmlib.data: tasks are correct, deterministic and split without overlap; vocab and batches."""
import datetime as dt

import pytest
import torch

from tfmlib.data import (DATE_FORMATS, TASKS, Batches, LMBatches, Vocab, encode_labels, encode_pairs,
                         format_date, load_corpus, make_task, number_to_words, pad_sequences, shift_right,
                         split_of)

SMALL = dict(n_train=300, n_val=40, n_test=40)


def key_of(name, example):
    return TASKS[name][1](example)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_data_other_seed_other_data(name):
    a, b = make_task(name, seed=0, **SMALL), make_task(name, seed=0, **SMALL)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    c = make_task(name, seed=1, **SMALL)
    assert c.train != a.train
    assert (len(a.train), len(a.val), len(a.test)) == (300, 40, 40)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint_and_unique(name):
    splits = make_task(name, seed=0, **SMALL)
    keys = {part: {key_of(name, ex) for ex in getattr(splits, part)} for part in ("train", "val", "test")}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    for part in ("train", "val", "test"):
        sources = [ex[0] for ex in getattr(splits, part)]
        assert len(set(sources)) == len(sources), f"duplicate examples in {part}"
        assert all(split_of(key_of(name, ex)) == part for ex in getattr(splits, part))
    # another seed draws other examples, but never moves a key to another split
    other = make_task(name, seed=7, **SMALL)
    assert not {key_of(name, ex) for ex in other.train} & (keys["val"] | keys["test"])


def test_sequence_task_targets():
    for src, tgt in make_task("copy", **SMALL).train:
        assert src == tgt and src.isdigit()
    for src, tgt in make_task("reverse", **SMALL).train:
        assert tgt == src[::-1]
    for src, tgt in make_task("sort", **SMALL).train:
        assert tgt == "".join(sorted(src))
    lengths = {len(s) for s, _ in make_task("copy", min_len=4, max_len=5, **SMALL).train}
    assert lengths == {4, 5}


def balanced(text):
    pairs, stack = {")": "(", "]": "["}, []
    for ch in text:
        if ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
        else:
            stack.append(ch)
    return not stack


def test_brackets_labels_are_right_and_balanced_in_number():
    splits = make_task("brackets", **SMALL)
    for part in (splits.train, splits.val, splits.test):
        assert all(label == int(balanced(text)) for text, label in part)
        assert sum(label for _, label in part) == len(part) // 2
    assert all(len(text) % 2 == 0 for text, _ in splits.train)  # length alone never gives the answer away


def test_date_formats_from_the_brief():
    date = dt.date(2021, 3, 3)
    written = {format_date(date, f) for f in DATE_FORMATS}
    for expected in ("3 March 2021", "Mar 3, 2021", "03/03/21", "Wednesday, March 3rd 2021", "2021.3.3"):
        assert expected in written
    assert format_date(dt.date(1999, 12, 22), "{dth} of {Month}, {Y}") == "22nd of December, 1999"
    assert format_date(dt.date(2011, 11, 11), "{Weekday}, {Month} {dth} {Y}") == "Friday, November 11th 2011"


def test_date_examples_are_correct():
    for text, iso in make_task("dates", **SMALL).train:
        date = dt.date.fromisoformat(iso)
        assert 1950 <= date.year <= 2049
        assert text in {format_date(date, f) for f in DATE_FORMATS}, (text, iso)


def test_number_words():
    assert number_to_words(0) == "zero" and number_to_words(15) == "fifteen"
    assert number_to_words(42) == "forty-two" and number_to_words(300) == "three hundred"
    assert number_to_words(7019) == "seven thousand nineteen"
    assert number_to_words(123456) == "one hundred twenty-three thousand four hundred fifty-six"
    with pytest.raises(ValueError):
        number_to_words(-1)
    for text, digits in make_task("number_words", **SMALL).train:
        assert number_to_words(int(digits)) == text


def test_impossible_requests_fail_clearly():
    with pytest.raises(ValueError, match="could only make"):
        make_task("copy", n_train=500, n_val=0, n_test=0, min_len=1, max_len=2)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("translate")
    with pytest.raises(ValueError, match="n_train"):
        make_task("copy", n_train=-1)


# --------------------------------------------------------------------------- vocabulary

def test_vocab_round_trip_and_special_ids():
    vocab = Vocab.from_texts(["hello world", "dlrow"])
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and len(vocab) == 4 + len(set("hello world"))
    for text in ("hello", "world", "", "low lord"):
        assert vocab.decode(vocab.encode(text)) == text
        assert vocab.decode(vocab.encode(text, bos=True, eos=True)) == text
    ids = vocab.encode("hi", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and ids[2] == vocab.unk_id  # 'i' is unknown
    assert vocab.decode(vocab.encode("he") + [vocab.eos_id] + vocab.encode("llo")) == "he"  # stops at <eos>
    assert vocab.decode(vocab.encode("he", eos=True), keep_special=True) == "he<eos>"


def test_encode_batch_pads_and_decodes_back():
    vocab = Vocab("abc")
    batch = vocab.encode_batch(["abc", "a", ""], eos=True)
    assert batch.dtype == torch.long and batch.shape == (3, 4)
    assert batch[1].tolist() == [4, 2, 0, 0]
    assert vocab.decode_batch(batch) == ["abc", "a", ""]
    assert pad_sequences([[5, 6], [7]], pad_id=0, length=4).tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    with pytest.raises(ValueError, match="shorter"):
        pad_sequences([[1, 2, 3]], length=2)


def test_shift_right_for_teacher_forcing():
    tgt = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])
    assert shift_right(tgt, bos_id=1).tolist() == [[1, 5, 6, 7], [1, 8, 2, 0]]
    with pytest.raises(TypeError, match="integer"):
        shift_right(tgt.float(), 1)


def test_encode_pairs_and_labels():
    splits = make_task("reverse", **SMALL)
    vocab = splits.vocab()
    src, tgt = encode_pairs(splits.train, vocab)
    assert src.shape[0] == tgt.shape[0] == 300
    assert vocab.decode(src[0]) == splits.train[0][0] and vocab.decode(tgt[0]) == splits.train[0][1]
    assert (tgt == vocab.eos_id).sum(1).tolist() == [1] * 300  # every target ends in <eos>
    brackets = make_task("brackets", **SMALL)
    x, y = encode_labels(brackets.train, brackets.vocab())
    assert x.shape[0] == y.shape[0] == 300 and y.tolist() == [label for _, label in brackets.train]


# --------------------------------------------------------------------------- batches

def test_batches_are_seeded_and_cover_each_epoch_once():
    ids = torch.arange(10)[:, None].repeat(1, 3)  # (10, 3)
    batches = Batches(ids, torch.arange(10), batch_size=4, seed=0)
    assert len(batches) == 3
    epoch0 = torch.cat([batches.batch_at(s)[1] for s in range(3)])
    epoch1 = torch.cat([batches.batch_at(s)[1] for s in range(3, 6)])
    assert sorted(epoch0.tolist()) == sorted(epoch1.tolist()) == list(range(10))
    assert epoch0.tolist() != epoch1.tolist(), "each epoch reshuffles"
    again = Batches(ids, torch.arange(10), batch_size=4, seed=0)
    assert torch.equal(again.batch_at(4)[1], batches.batch_at(4)[1])  # a pure function of (seed, step)
    assert not torch.equal(Batches(ids, torch.arange(10), batch_size=10, seed=1).batch_at(0)[1],
                           Batches(ids, torch.arange(10), batch_size=10, seed=0).batch_at(0)[1])
    iterated = [b[1] for b in Batches(ids, torch.arange(10), batch_size=4, seed=0)]
    assert [t.tolist() for t in iterated] == [batches.batch_at(s)[1].tolist() for s in range(3)]
    plain = Batches(torch.arange(5), batch_size=2, shuffle=False, drop_last=True)
    assert [b[0].tolist() for b in plain] == [[0, 1], [2, 3]]


def test_batches_trim_padding_and_check_shapes():
    seqs = pad_sequences([[4, 5, 6, 7, 8], [4], [4, 5]])  # (3, 5)
    batches = Batches(seqs, batch_size=2, shuffle=False, pad_id=0)
    assert batches.batch_at(0)[0].shape == (2, 5) and batches.batch_at(1)[0].tolist() == [[4, 5]]
    with pytest.raises(ValueError, match="first dimension"):
        Batches(torch.zeros(4, 2), torch.zeros(5), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(torch.zeros(4, 2), batch_size=0)


def test_lm_batches_are_shifted_windows():
    tokens = torch.arange(50)
    data = LMBatches(tokens, block_size=6, batch_size=3, seed=0)
    x, y = data.batch_at(7)
    assert x.shape == y.shape == (3, 6) and torch.equal(y, x + 1)
    assert torch.equal(LMBatches(tokens, 6, 3, seed=0).batch_at(7)[0], x)
    with pytest.raises(ValueError, match="block_size"):
        LMBatches(torch.arange(5), block_size=8)


def test_corpora_are_offline(tmp_path):
    stories = load_corpus("stories", n_sentences=50)
    assert stories.count("\n") == 50 and stories == load_corpus("stories", n_sentences=50)
    assert len(load_corpus("python-docs")) > 100_000
    assert load_corpus("zen").startswith("The Zen of Python")
    path = tmp_path / "mine.txt"
    path.write_text("my own text\n", encoding="utf-8")
    assert load_corpus(path) == "my own text\n"
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("no-such-corpus")


def test_pad_collate_for_dataloaders():
    from torch.utils.data import DataLoader

    from tfmlib.data import PadCollate
    examples = [([5, 6, 7], 1), ([8], 0), ([9, 10], 1)]
    (ids, labels), = DataLoader(examples, batch_size=3, collate_fn=PadCollate(pad_id=0))
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and labels.tolist() == [1, 0, 1]


# ---------------------------------------------------------------- which tensors share a length (issue 10)
def test_batches_same_length_groups_keep_inputs_and_labels_aligned():
    inputs = torch.tensor([[5, 6, 0, 0, 0], [7, 0, 0, 0, 0], [8, 9, 4, 0, 0]])
    labels = torch.tensor([[-100, 6, -100, -100, -100], [7, -100, -100, -100, -100], [-100, -100, 4, -100, -100]])
    weights = (inputs != 0).float()
    tgt = torch.tensor([[1, 2, 0], [1, 0, 0], [1, 0, 0]])
    alone = Batches(inputs, labels, batch_size=2, shuffle=False, pad_id=0)
    x, y = alone.batch_at(0)
    assert x.shape == (2, 2) and y.shape == (2, 5)    # the default: each cut to its own length (unrelated tensors)
    together = Batches(inputs, labels, weights, tgt, batch_size=2, shuffle=False, pad_id=0, same_length=[(0, 1, 2)])
    x, y, w, t = together.batch_at(0)
    assert x.shape == y.shape == w.shape == (2, 2)     # one length, decided by the inputs
    assert t.shape == (2, 2)                           # tgt (not in the group) is cut on its own
    assert torch.equal(y, labels[:2, :2]) and torch.equal(w, weights[:2, :2])
    x, y, w, t = together.batch_at(1)
    assert x.shape == y.shape == w.shape == (1, 3) and t.shape == (1, 1)


def test_batches_same_length_is_checked():
    a, b = torch.tensor([[1, 0], [2, 3]]), torch.tensor([[1, 0, 0], [2, 3, 0]])
    with pytest.raises(ValueError, match="second dimension"):
        Batches(a, b, pad_id=0, same_length=[(0, 1)])
    with pytest.raises(ValueError, match="needs pad_id"):
        Batches(a, a, same_length=[(0, 1)])
    with pytest.raises(ValueError, match="at least two distinct positions"):
        Batches(a, a, pad_id=0, same_length=[(0, 2)])
    with pytest.raises(ValueError, match="2-D integer"):
        Batches(a.float(), a, pad_id=0, same_length=[(0, 1)])


def test_pad_collate_pads_labels_with_their_own_value():
    from tfmlib.data import PadCollate
    ids, labels = PadCollate(pad_id=0, pad_values=(0, -100))([([5, 6, 7], [6, 7, 2]), ([8], [2])])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and labels.tolist() == [[6, 7, 2], [2, -100, -100]]
    with pytest.raises(ValueError, match="2 columns"):
        PadCollate(pad_values=(0,))([([5], [6])])
