"""Characters <-> ids: the course's character vocabulary and right-padding of id lists.

    vocab = Vocab.from_texts(["hello", "world"])   # <pad>=0 <bos>=1 <eos>=2 <unk>=3, then characters
    vocab.encode("hello", eos=True)                # [..., 2]
    pad_sequences([[5, 6, 7], [8]], pad_id=0)       # (B, T) LongTensor, right-padded

(tfmlib.data re-exports both; they live here so that tfmlib.tasks can use them without
importing tfmlib.data, which imports tfmlib.tasks.)

Shape legend: B batch, T sequence length.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = ["Vocab", "pad_sequences", "SPECIALS"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Vocab:
    """Characters <-> ids, with <pad> = 0, <bos> = 1, <eos> = 2, <unk> = 3 first."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, symbols: Iterable[str]):
        symbols = [s for s in dict.fromkeys(symbols) if s not in SPECIALS]  # unique, order kept
        self.itos: list[str] = [*SPECIALS, *symbols]
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Vocab":
        """Every character that occurs in ``texts``, sorted."""
        return cls(sorted(set("".join(texts))))

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, symbols={''.join(self.itos[len(SPECIALS):])!r})"

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(ch, self.unk_id) for ch in text]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids, keep_special: bool = False) -> str:
        """ids -> text. Stops at the first <eos> and drops <pad>/<bos> unless ``keep_special``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not keep_special:
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id):
                    continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else SPECIALS[self.unk_id])
        return "".join(out)

    def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False,
                     length: int | None = None) -> torch.Tensor:
        """Texts -> (B, T) ids, right-padded with <pad> (T = longest, or ``length``)."""
        return pad_sequences([self.encode(t, bos, eos) for t in texts], self.pad_id, length)

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        return [self.decode(row) for row in ids]


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None) -> torch.Tensor:
    """Lists of ids -> one (B, T) LongTensor, right-padded with ``pad_id``."""
    longest = max((len(s) for s in seqs), default=0)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest sequence ({longest} ids)")
    out = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out
