"""Tokenizers trained from scratch: characters, words and byte-pair encoding (BPE).

A tokenizer turns text into a list of integer ids (``encode``) and back (``decode``).
Ids index the rows of an embedding table, so the vocabulary size V is the number
of rows of that table (shape legend: V vocabulary size, T tokens per text).

    CharTokenizer  one id per character: small V, long sequences
    WordTokenizer  one id per word: large V, short sequences, unknown words -> <unk>
    BPETokenizer   starts from the 256 bytes and learns merges of frequent pairs:
                   any V you choose, never an unknown token (GPT-2 style, byte level)

``story_text`` generates the small, deterministic corpus the lessons train on.

The GPT-2-compatible byte-level BPE (regex pre-tokenizer, special tokens, the conventional tie
rule, GPT-2's own vocabulary, streaming) lives in tfmlib.bpe and is re-exported here:
``ByteLevelBPE``, ``gpt2_tokenizer()``, ``GPT2_PATTERN``; so are the two BPE steps
``count_pairs`` and ``merge_pair`` that both BPE tokenizers use.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from .bpe import GPT2_PATTERN, ByteLevelBPE, count_pairs, gpt2_tokenizer, merge_pair

__all__ = ["CharTokenizer", "WordTokenizer", "BPETokenizer", "count_pairs", "merge_pair", "story_text",
           "ByteLevelBPE", "gpt2_tokenizer", "GPT2_PATTERN"]

UNK = "<unk>"

# --------------------------------------------------------------------------- shared behaviour


class _Tokenizer:
    """encode/decode/tokens for a tokenizer whose vocabulary is a list of strings."""

    vocab: list[str]

    def __init__(self):
        self.vocab = []
        self._index: dict[str, int] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _check_trained(self):
        if not self.vocab:
            raise ValueError(f"this {type(self).__name__} has no vocabulary yet: call .train(text) first")

    def _set_vocab(self, pieces: Counter, vocab_size: int | None):
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 2):
            raise ValueError(f"vocab_size must be an int >= 2 (room for {UNK!r} and one piece), got {vocab_size!r}")
        ranked = sorted(pieces, key=lambda p: (-pieces[p], p))  # most frequent first, ties alphabetical
        kept = ranked if vocab_size is None else ranked[:vocab_size - 1]
        self.vocab = [UNK] + sorted(kept)
        self._index = {piece: i for i, piece in enumerate(self.vocab)}

    def split(self, text: str) -> list[str]:  # pragma: no cover - each subclass defines it
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Text -> ids; a piece outside the vocabulary becomes the id of <unk> (0)."""
        self._check_trained()
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [self._index.get(piece, 0) for piece in self.split(text)]

    def tokens(self, text: str) -> list[str]:
        """The pieces the model will see, as strings (<unk> where the vocabulary has no entry)."""
        return [self.vocab[i] for i in self.encode(text)]

    def _check_ids(self, ids) -> list[int]:
        self._check_trained()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must lie in [0, {self.vocab_size - 1}], got {bad[:5]}")
        return ids


class CharTokenizer(_Tokenizer):
    """One token per character. ``train`` collects the characters of the text (plus <unk>)."""

    def train(self, text: str, vocab_size: int | None = None) -> "CharTokenizer":
        if not isinstance(text, str) or not text:
            raise ValueError("train needs a non-empty str of training text")
        self._set_vocab(Counter(text), vocab_size)
        return self

    def split(self, text: str) -> list[str]:
        return list(text)

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in self._check_ids(ids))


WORD_PATTERN = re.compile(r"\w+|[^\w\s]")  # a word, or one punctuation mark; spaces are dropped


class WordTokenizer(_Tokenizer):
    """One token per word or punctuation mark; the ``vocab_size - 1`` most frequent ones are kept.

    Decoding puts single spaces between words, so the exact spacing of the text is lost.
    """

    def train(self, text: str, vocab_size: int | None = None) -> "WordTokenizer":
        if not isinstance(text, str) or not text.strip():
            raise ValueError("train needs a non-empty str of training text")
        self._set_vocab(Counter(self.split(text)), vocab_size)
        return self

    def split(self, text: str) -> list[str]:
        return WORD_PATTERN.findall(text)

    def decode(self, ids) -> str:
        text = " ".join(self.vocab[i] for i in self._check_ids(ids))
        return re.sub(r" ([.,;:!?])", r"\1", text)  # no space before punctuation


# --------------------------------------------------------------------------- byte-pair encoding

# Pre-tokenization: BPE never merges across these chunks. A chunk is a word with its
# leading space (" cat"), a run of digits (" 123", or single digits), punctuation, or spaces.
CHUNK_PATTERN = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\w\s]+|\s+(?!\S)|\s+|_+")
CHUNK_PATTERN_SPLIT_DIGITS = re.compile(r" ?[^\W\d_]+|\d| ?[^\w\s]+|\s+(?!\S)|\s+|_+")


class BPETokenizer:
    """Byte-level byte-pair encoding.

    The vocabulary starts as the 256 possible bytes (ids 0..255), so every text can be
    encoded and nothing is ever unknown. Training repeats one step ``vocab_size - 256``
    times: count adjacent pairs over the training text, merge the most frequent pair into
    a new id. Ties go to the smallest pair (a, b), so training is deterministic (the simple rule
    of lesson 02; tfmlib.bpe.ByteLevelBPE follows GPT-2's conventions instead).
    ``split_digits=True`` keeps every digit its own token (as Llama does).
    """

    def __init__(self, split_digits: bool = False):
        self.split_digits = split_digits
        self.merges: list[tuple[int, int]] = []  # merges[k] created id 256 + k
        self._rebuild()

    def _rebuild(self):
        self.pieces = [bytes([b]) for b in range(256)]  # id -> the bytes it stands for
        self._rank = {}
        for k, (a, b) in enumerate(self.merges):
            self.pieces.append(self.pieces[a] + self.pieces[b])
            self._rank[(a, b)] = 256 + k
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def chunks(self, text: str) -> list[str]:
        """Pre-tokenize: the pieces of text that merges may not cross."""
        pattern = CHUNK_PATTERN_SPLIT_DIGITS if self.split_digits else CHUNK_PATTERN
        return pattern.findall(text)

    def train(self, text: str, vocab_size: int, min_frequency: int = 2) -> "BPETokenizer":
        """Learn ``vocab_size - 256`` merges (fewer if no pair occurs ``min_frequency`` times)."""
        if not isinstance(text, str) or not text:
            raise ValueError("train needs a non-empty str of training text")
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the byte alphabet), got {vocab_size!r}")
        chunk_counts = Counter(self.chunks(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts: dict = {}
        for word, freq in zip(words, freqs):
            count_pairs(word, pair_counts, freq)
        self.merges = []
        while 256 + len(self.merges) < vocab_size and pair_counts:
            best = max(pair_counts, key=lambda p: (pair_counts[p], -p[0], -p[1]))
            if pair_counts[best] < min_frequency:
                break
            new_id = 256 + len(self.merges)
            self.merges.append(best)
            for w, (word, freq) in enumerate(zip(words, freqs)):
                if best[0] not in word or best[1] not in word:
                    continue
                count_pairs(word, pair_counts, -freq)  # forget this word's old pairs ...
                words[w] = merge_pair(word, best, new_id)
                count_pairs(words[w], pair_counts, freq)  # ... and count its new ones
            pair_counts = {p: c for p, c in pair_counts.items() if c > 0}
        self._rebuild()
        return self

    def truncated(self, n_merges: int) -> "BPETokenizer":
        """The tokenizer after only the first ``n_merges`` merges (training is greedy, so this
        equals training with vocab_size = 256 + n_merges)."""
        if not 0 <= n_merges <= len(self.merges):
            raise ValueError(f"n_merges must lie in [0, {len(self.merges)}], got {n_merges}")
        smaller = BPETokenizer(self.split_digits)
        smaller.merges = self.merges[:n_merges]
        smaller._rebuild()
        return smaller

    def _encode_chunk(self, chunk: str) -> list[int]:
        if chunk not in self._cache:
            ids = list(chunk.encode("utf-8"))
            while len(ids) >= 2:  # apply the earliest-learned merge present, as in training
                pair = min(zip(ids, ids[1:]), key=lambda p: self._rank.get(p, float("inf")))
                if pair not in self._rank:
                    break
                ids = merge_pair(ids, pair, self._rank[pair])
            self._cache[chunk] = ids
        return self._cache[chunk]

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [i for chunk in self.chunks(text) for i in self._encode_chunk(chunk)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must lie in [0, {self.vocab_size - 1}], got {bad[:5]}")
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    def tokens(self, text: str) -> list[str]:
        """The pieces as strings (a piece that is part of a multi-byte character shows as '�')."""
        return [self.pieces[i].decode("utf-8", errors="replace") for i in self.encode(text)]


# --------------------------------------------------------------------------- a corpus to train on

_ANIMALS = ["cat", "dog", "fox", "bird", "horse", "mouse"]
_FOODS = ["apple", "bread", "cheese", "cake", "soup", "carrot"]
_PLACES = ["garden", "forest", "kitchen", "river", "market", "meadow"]
_NAMES = ["anna", "ben", "clara", "david", "emma", "felix"]
_COLOURS = ["red", "green", "brown", "yellow", "small", "warm"]
_VERBS = ["jump", "walk", "play", "rest", "look", "hunt"]
_MOODS = ["happy", "kind", "tidy", "lucky", "calm", "friendly"]
_NEGATABLE = ["happy", "kind", "tidy", "friendly"]  # "un" + these; never "unlucky" or "uncalm"


def story_text(n_sentences: int = 2000, seed: int = 0) -> str:
    """Deterministic little stories (lower case, one sentence per line) built from a few
    word families: animals, foods, places, names; verbs in four forms (jump, jumps,
    jumped, jumping); moods with and without "un"; and sums written with digits.
    The same seed gives the same text on every machine."""
    if not isinstance(n_sentences, int) or n_sentences < 1:
        raise ValueError(f"n_sentences must be a positive int, got {n_sentences!r}")
    rng = random.Random(seed)
    pick = rng.choice
    sentences = []
    for _ in range(n_sentences):
        kind = rng.randrange(6)
        animal, food, place, name = pick(_ANIMALS), pick(_FOODS), pick(_PLACES), pick(_NAMES)
        verb, colour = pick(_VERBS), pick(_COLOURS)
        mood = pick(_MOODS)
        if mood in _NEGATABLE and rng.random() < 0.5:
            mood = "un" + mood
        if kind == 0:
            sentences.append(f"the {colour} {animal} {verb}s in the {place}.")
        elif kind == 1:
            sentences.append(f"{name} eats the {colour} {food} in the {place}.")
        elif kind == 2:
            sentences.append(f"{name} was {mood} because the {animal} {verb}ed near the {place}.")
        elif kind == 3:
            sentences.append(f"{name} is {verb}ing with the {animal} and the {food}.")
        elif kind == 4:
            a, b = rng.randrange(1, 500), rng.randrange(1, 500)
            sentences.append(f"{name} has {a} {food}s and finds {b} more, so {name} has {a + b}.")
        else:
            sentences.append(f"the {animal} is {mood} and {verb}s with {name}.")
    return "\n".join(sentences) + "\n"
