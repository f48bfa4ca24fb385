"""A labelled text task the course owns: topic classification of short template sentences, built so
that the held-out sentences use **content words no labelled sentence contains**.

    task = make_topic_task(n_train=64, n_test=40, seed=0)
    task.train[0]          # ("We talked about golf and cricket all evening.", 0)
    task.labels            # ("sport", "food", "weather", "animals", "music")
    task.test              # new words AND new templates: only knowledge of the words can help
    task.test_seen_words   # the labelled words in new templates: what a model learned from the labels alone

Each of the five topics has twenty words, ten for the labelled (train) sentences and ten others for
the test sentences ("football, tennis, ..." vs "hockey, rugby, ..."), and the twelve templates are
split 8 / 4 the same way. A sentence names two different words of one topic, so its label is the
topic, and every template is used by every topic (the template alone says nothing). Every word is
a single piece of BERT's uncased WordPiece vocabulary (all-MiniLM-L6-v2's), so a pretrained
encoder has a vector for each one. The same ``seed`` gives the same sentences on every machine.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

__all__ = ["TOPIC_WORDS", "TRAIN_TEMPLATES", "TEST_TEMPLATES", "TopicTask", "make_topic_task", "topic_sentences"]

# topic -> (words of the labelled sentences, words of the test sentences); disjoint, ten each
TOPIC_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sport": (("football", "tennis", "golf", "cricket", "baseball", "basketball", "boxing", "swimming",
               "cycling", "skiing"),
              ("hockey", "rugby", "volleyball", "wrestling", "rowing", "archery", "soccer", "marathon",
               "surfing", "softball")),
    "food": (("bread", "cheese", "pasta", "rice", "soup", "pizza", "salad", "chicken", "cake", "apples"),
             ("potatoes", "noodles", "butter", "chocolate", "beef", "eggs", "sandwiches", "pancakes",
              "cookies", "bananas")),
    "weather": (("rain", "snow", "wind", "fog", "storms", "sunshine", "thunder", "hail", "clouds", "frost"),
                ("lightning", "humidity", "rainfall", "hurricanes", "tornadoes", "showers", "mist", "breeze",
                 "drought", "floods")),
    "animals": (("dogs", "cats", "horses", "wolves", "elephants", "tigers", "lions", "rabbits", "foxes", "bears"),
                ("sheep", "goats", "monkeys", "whales", "snakes", "owls", "deer", "mice", "eagles", "dolphins")),
    "music": (("guitar", "piano", "violin", "drums", "jazz", "opera", "songs", "concerts", "trumpet", "saxophone"),
              ("choir", "melody", "orchestra", "rhythm", "symphony", "flute", "cello", "banjo", "harmony",
               "lyrics")),
}

TRAIN_TEMPLATES = (
    "We talked about {a} and {b} all evening.",
    "Her new book is mostly about {a} and {b}.",
    "The radio show this morning covered {a} and {b}.",
    "My uncle never stops talking about {a} and {b}.",
    "There was a long article on {a} and {b} in the paper.",
    "I wrote some notes about {a} and {b}.",
    "The children asked questions about {a} and {b}.",
    "Our class spent the day learning about {a} and {b}.",
)
TEST_TEMPLATES = (
    "He showed me some pictures of {a} and {b}.",
    "The website has a whole page on {a} and {b}.",
    "Everyone at dinner had an opinion on {a} and {b}.",
    "She is making a short film about {a} and {b}.",
)


def topic_sentences(n_per_class: int, words: str = "train", templates: str = "train",
                    seed: int = 0) -> list[tuple[str, int]]:
    """``n_per_class`` distinct (sentence, label) pairs per topic, labels in TOPIC_WORDS' order, shuffled.

    words, templates  "train" or "test": which half of each topic's words / of the templates to use.
    Raises ValueError for another name, or for more sentences than the halves can make (90 word pairs
    x the templates: 720 per topic with the train templates, 360 with the test ones)."""
    for name, value in (("words", words), ("templates", templates)):
        if value not in ("train", "test"):
            raise ValueError(f"{name} must be 'train' or 'test', got {value!r}")
    chosen_templates = TRAIN_TEMPLATES if templates == "train" else TEST_TEMPLATES
    rng = random.Random(f"topics:{words}:{templates}:{seed}")  # string seeds: the same on every machine
    out = []
    for label, halves in enumerate(TOPIC_WORDS.values()):
        vocabulary = halves[0] if words == "train" else halves[1]
        combos = [(t, a, b) for t in chosen_templates for a, b in itertools.permutations(vocabulary, 2)]
        if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or not 0 <= n_per_class <= len(combos):
            raise ValueError(f"n_per_class must be an integer in [0, {len(combos)}] for {templates} templates, "
                             f"got {n_per_class!r}")
        out += [(t.format(a=a, b=b), label) for t, a, b in rng.sample(combos, n_per_class)]
    rng.shuffle(out)
    return out


@dataclass(frozen=True)
class TopicTask:
    """Three lists of (sentence, label): labelled pool, new-word test, seen-word test."""

    train: list
    test: list
    test_seen_words: list
    labels: tuple = tuple(TOPIC_WORDS)

    def __repr__(self) -> str:
        return (f"TopicTask({len(self.labels)} topics, train={len(self.train)}, test={len(self.test)}, "
                f"test_seen_words={len(self.test_seen_words)})")


def make_topic_task(n_train: int = 64, n_test: int = 40, seed: int = 0) -> TopicTask:
    """The topic task with ``n_train`` labelled and ``n_test`` + ``n_test`` test sentences per topic.

    train            train words in train templates (the pool labelled examples are drawn from)
    test             test words in test templates: no content word and no template of train
    test_seen_words  train words in test templates: the labelled words, new sentences
    No sentence is in two lists (they differ in template or words)."""
    return TopicTask(train=topic_sentences(n_train, "train", "train", seed),
                     test=topic_sentences(n_test, "test", "test", seed),
                     test_seen_words=topic_sentences(n_test, "train", "test", seed))
