"""BERT's WordPiece tokenizer, written from its two stages, reading BERT's own ``vocab.txt``.

1. Basic tokenization: drop control characters, put spaces around CJK ideographs, (optionally)
   lower-case and strip accents (NFD, then drop the combining marks), split on whitespace and
   cut every punctuation character into its own token.
2. WordPiece: each word is covered greedily, longest match first, by pieces from the
   vocabulary; pieces after the first carry the ``##`` prefix ("unaffable" -> un ##aff ##able).
   A word that cannot be covered becomes ``[UNK]`` as a whole.

    tok = WordPieceTokenizer.from_vocab_file("vocab.txt")
    tok.tokenize("Héllo, world!")          # ['hello', ',', 'world', '!']
    batch = tok(["a sentence", "another one"])   # input_ids, attention_mask, token_type_ids (B, T)

Equal to Hugging Face's BertTokenizer (and the ``tokenizers`` BertWordPieceTokenizer) on the
tests' text. Shape legend: B batch, T longest sequence in the batch.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["WordPieceTokenizer", "basic_tokenize", "wordpiece", "is_punctuation", "is_cjk"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# CJK Unified Ideographs and their extensions (Hangul, Hiragana and Katakana are not in these blocks)
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(char: str) -> bool:
    """True for a CJK ideograph, which BERT treats as a word of its own."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_punctuation(char: str) -> bool:
    """Every ASCII non-letter, non-digit, non-space character (so $, +, ^ too) and Unicode's P* classes."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces, current = [], ""
    for char in word:
        if is_punctuation(char):
            pieces += [current, char] if current else [char]
            current = ""
        else:
            current += char
    return pieces + [current] if current else pieces


def basic_tokenize(text: str, lowercase: bool = True, strip_accents: bool | None = None,
                   split_cjk: bool = True) -> list[str]:
    """Stage 1: text -> words and punctuation. ``strip_accents=None`` follows ``lowercase``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    cleaned = []
    for char in text:
        if ord(char) in (0, 0xFFFD) or _is_control(char):
            continue
        if _is_whitespace(char):
            cleaned.append(" ")
        elif split_cjk and is_cjk(char):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    text = unicodedata.normalize("NFC", "".join(cleaned))
    strip = lowercase if strip_accents is None else strip_accents
    words = []
    for word in text.split():
        if lowercase:
            word = word.lower()
        if strip:
            word = _strip_accents(word)
        words += _split_punctuation(word)
    return words


def wordpiece(word: str, vocab: dict[str, int], unk: str = "[UNK]", max_chars: int = 100) -> list[str]:
    """Stage 2: cover one word greedily, longest match first; ``[unk]`` if any part cannot be covered."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:          # not even one character matched
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


class WordPieceTokenizer:
    """BERT's tokenizer: ``tokenize`` (text -> pieces), ``encode`` (-> ids with [CLS] ... [SEP]),
    ``__call__`` (a batch -> padded tensors), ``decode`` (ids -> text).

    vocab: the pieces in id order (line i of vocab.txt has id i). Special tokens written in the
    text ("[MASK]", "[SEP]", ...) are kept whole.
    """

    def __init__(self, vocab: Sequence[str], lowercase: bool = True, strip_accents: bool | None = None,
                 split_cjk: bool = True):
        self.vocab = {piece: i for i, piece in enumerate(vocab)}
        self.pieces = list(vocab)
        missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]") if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks the special token(s) {missing}")
        self.lowercase, self.strip_accents, self.split_cjk = lowercase, strip_accents, split_cjk
        self.specials = [t for t in SPECIAL_TOKENS if t in self.vocab]
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]

    @classmethod
    def from_vocab_file(cls, path: str | Path, **options) -> "WordPieceTokenizer":
        """Read BERT's vocab.txt (one piece per line, the line number is the id)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no WordPiece vocabulary at {path} (BERT models ship it as vocab.txt)")
        return cls(path.read_text(encoding="utf-8").splitlines(), **options)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    def _split_specials(self, text: str) -> list[tuple[str, bool]]:
        """[(chunk, is_special)]: the special tokens written in the text, and the text between them."""
        parts = [(text, False)]
        for special in self.specials:
            out = []
            for chunk, is_special in parts:
                if is_special:
                    out.append((chunk, True))
                    continue
                for i, piece in enumerate(chunk.split(special)):
                    if i:
                        out.append((special, True))
                    out.append((piece, False))
            parts = out
        return [(chunk, is_special) for chunk, is_special in parts if is_special or chunk]

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece strings (no [CLS]/[SEP] added)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pieces = []
        for chunk, is_special in self._split_specials(text):
            if is_special:
                pieces.append(chunk)
                continue
            for word in basic_tokenize(chunk, self.lowercase, self.strip_accents, self.split_cjk):
                pieces += wordpiece(word, self.vocab)
        return pieces

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        """[CLS] text [SEP] (pair [SEP]) as ids."""
        ids = [self.vocab[p] for p in self.tokenize(text)]
        if not add_special_tokens:
            return ids + ([self.vocab[p] for p in self.tokenize(pair)] if pair is not None else [])
        ids = [self.cls_id] + ids + [self.sep_id]
        if pair is not None:
            ids += [self.vocab[p] for p in self.tokenize(pair)] + [self.sep_id]
        return ids

    def __call__(self, texts: str | Sequence[str], pairs: Sequence[str] | None = None,
                 max_length: int = 512) -> dict[str, torch.Tensor]:
        """A batch, padded on the right: input_ids, attention_mask (1 = real), token_type_ids (0 first
        segment, 1 the pair's), each (B, T). Sequences longer than max_length are cut (keeping [SEP])."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"pairs must match texts one to one, got {len(pairs)} pairs for {len(texts)} texts")
        rows, types = [], []
        for i, text in enumerate(texts):
            first = self.encode(text)
            ids = first if pairs is None else self.encode(text, pairs[i])
            if len(ids) > max_length:
                ids = ids[:max_length - 1] + [self.sep_id]
            rows.append(ids)
            types.append([0] * min(len(first), len(ids)) + [1] * max(len(ids) - len(first), 0))
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(rows), T), dtype=torch.long)
        for i, (ids, segment) in enumerate(zip(rows, types)):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            token_type_ids[i, :len(ids)] = torch.tensor(segment)
        lengths = torch.tensor([len(r) for r in rows])
        attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.pieces[int(i)] for i in ids]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Ids -> text: pieces joined by spaces, ``##`` pieces glued to the one before."""
        pieces = [p for p in self.convert_ids_to_tokens(ids) if not (skip_special_tokens and p in self.specials
                                                                      and p != "[UNK]")]
        return " ".join(pieces).replace(" ##", "")
