"""The course's synthetic tasks, generated here with fixed seeds: copy, reverse, sort
(digit strings), brackets (is "([])" balanced? label 1/0), dates ("Wednesday, March 3rd
2021", "03/03/21", "2021.3.3" ... -> "2021-03-03") and number_words ("four hundred twelve"
-> "412"); and, for lesson 12's instruction tuning, instructions about a 4-digit string with
exact answers ("Sort 3141" -> "1134"): instruction_data, instruction_splits.

    splits = make_task("dates", n_train=2000, n_val=200, n_test=200, seed=0)
    splits.train[0]       # (source, target) strings; (text, label) for brackets
    vocab = splits.vocab()

Each example goes to train, val or test by a hash of its key (80/10/10 %; the date or
number itself for dates and number words), so no example - and no date in another format -
is ever in two splits, whatever the seed or sizes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

from .vocab import Vocab

__all__ = ["TASKS", "TaskSplits", "make_task", "split_of", "number_to_words", "format_date", "DATE_FORMATS",
           "copy_example", "reverse_example", "sort_example", "brackets_example", "dates_example",
           "number_words_example", "Instruction", "INSTRUCTION_KINDS", "DEFAULT_KINDS", "instruction_data",
           "instruction_splits"]


def _digits(rng: random.Random, min_len: int, max_len: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))


def copy_example(rng, min_len=3, max_len=10, alphabet="0123456789"):
    s = _digits(rng, min_len, max_len, alphabet)
    return s, s


def reverse_example(rng, min_len=3, max_len=10, alphabet="0123456789"):
    s = _digits(rng, min_len, max_len, alphabet)
    return s, s[::-1]


def sort_example(rng, min_len=3, max_len=10, alphabet="0123456789"):
    s = _digits(rng, min_len, max_len, alphabet)
    return s, "".join(sorted(s))


def _balanced(s: str, pairs: str) -> bool:
    closing = {pairs[i + 1]: pairs[i] for i in range(0, len(pairs), 2)}
    stack = []
    for ch in s:
        if ch in closing:
            if not stack or stack.pop() != closing[ch]:
                return False
        else:
            stack.append(ch)
    return not stack


def brackets_example(rng, min_len=4, max_len=16, pairs="()[]"):
    """(bracket string, 1 if balanced else 0); negatives are near misses of balanced strings."""
    n = rng.randint(max(1, min_len // 2), max(1, max_len // 2))
    out, stack = [], []
    while len(out) < 2 * n:  # random walk that always closes what it opened
        if stack and (len(stack) + len(out) >= 2 * n or rng.random() < 0.5):
            out.append(pairs[pairs.index(stack.pop()) + 1])
        else:
            opener = pairs[2 * rng.randrange(len(pairs) // 2)]
            stack.append(opener)
            out.append(opener)
    if rng.random() < 0.5:
        return "".join(out), 1
    while _balanced("".join(out), pairs):  # corrupt: swap two characters or change one
        i, j = rng.randrange(len(out)), rng.randrange(len(out))
        if rng.random() < 0.5:
            out[i], out[j] = out[j], out[i]
        else:
            out[i] = rng.choice(pairs)
    return "".join(out), 0


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Slashes are month-first (US), dots day-first (European) unless the year leads: one reading each.
DATE_FORMATS = (
    "{d} {Month} {Y}", "{Mon} {d}, {Y}", "{Month} {d}, {Y}", "{mm}/{dd}/{yy}", "{m}/{d}/{Y}",
    "{Weekday}, {Month} {dth} {Y}", "{Y}.{m}.{d}", "{dth} of {Month}, {Y}", "{dd}.{mm}.{Y}",
    "{Y}{mm}{dd}", "{Wkd} {d} {Mon} {Y}", "{d}-{Mon}-{Y}", "{MONTH} {d} {Y}", "{month} {dth}, {Y}",
    "{Y}-{mm}-{dd}", "{dd} {Mon} {yy}",
)


def format_date(date: dt.date, fmt: str) -> str:
    """Write ``date`` in one of the DATE_FORMATS (English names, independent of the locale)."""
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    return fmt.format(d=date.day, dd=f"{date.day:02d}", m=date.month, mm=f"{date.month:02d}",
                      Y=date.year, yy=f"{date.year % 100:02d}", Month=month, Mon=month[:3],
                      MONTH=month.upper(), month=month.lower(), Weekday=weekday, Wkd=weekday[:3],
                      dth=_ordinal(date.day))


def dates_example(rng, start_year=1950, end_year=2049, formats=DATE_FORMATS):
    """(a date in a human format, the same date as ISO 'YYYY-MM-DD'). Two-digit years are
    unambiguous because the years span one century."""
    first, last = dt.date(start_year, 1, 1).toordinal(), dt.date(end_year, 12, 31).toordinal()
    date = dt.date.fromordinal(rng.randint(first, last))
    return format_date(date, rng.choice(formats)), date.isoformat()


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """412 -> 'four hundred twelve', 1_042 -> 'one thousand forty-two' (0 <= n < 1_000_000)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"n must be in [0, 999999], got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + number_to_words(n % 100) if n % 100 else "")
    return number_to_words(n // 1000) + " thousand" + (" " + number_to_words(n % 1000) if n % 1000 else "")


def number_words_example(rng, max_value=9999):
    n = rng.randint(0, max_value)
    return number_to_words(n), str(n)


def _target_key(example):
    return str(example[1])


def _source_key(example):
    return example[0]


# name -> (example generator, the part of an example that decides its split)
# Classification tasks get equally many examples of each label in every split.
LABELS = {"brackets": (0, 1)}
TASKS: dict[str, tuple[Callable, Callable]] = {
    "copy": (copy_example, _source_key), "reverse": (reverse_example, _source_key),
    "sort": (sort_example, _source_key), "brackets": (brackets_example, _source_key),
    "dates": (dates_example, _target_key), "number_words": (number_words_example, _target_key),
}


def split_of(key: str) -> str:
    """'train' (80 % of keys), 'val' (10 %) or 'test' (10 %), fixed by a hash of the key."""
    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@dataclass(frozen=True)
class TaskSplits:
    """Disjoint lists of examples: (source, target) strings, or (text, label) for brackets."""

    name: str
    train: list
    val: list
    test: list

    def __repr__(self) -> str:
        return f"TaskSplits({self.name!r}, train={len(self.train)}, val={len(self.val)}, test={len(self.test)})"

    def vocab(self):
        """A character Vocab (tfmlib.vocab.Vocab, also tfmlib.data.Vocab) over every string in the three splits."""
        return Vocab.from_texts(s for part in (self.train, self.val, self.test)
                                for ex in part for s in ex if isinstance(s, str))


def make_task(name: str, n_train: int = 2000, n_val: int = 200, n_test: int = 200, seed: int = 0,
              **options) -> TaskSplits:
    """Unique examples of task ``name``, each in the split its key hashes to (see ``split_of``).

    The same name, seed and options give the same examples on every machine; ``options`` go
    to the generator (e.g. min_len, max_len, alphabet; start_year, end_year; max_value).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    make_example, key_of = TASKS[name]
    want = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in want.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n_{split} must be a non-negative integer, got {n!r}")
    rng = random.Random(f"{name}:{seed}")  # string seeds are hashed with SHA-512: stable everywhere
    labels = LABELS.get(name, (None,))
    quota = {(s, y): want[s] // len(labels) + (i < want[s] % len(labels)) for s in want for i, y in enumerate(labels)}
    out = {split: [] for split in want}
    seen, attempts, limit = set(), 0, 30 * sum(want.values()) + 1000
    while any(len(out[s]) < want[s] for s in want):
        attempts += 1
        if attempts > limit:
            got = {s: len(v) for s, v in out.items()}
            raise ValueError(f"could only make {got} unique {name!r} examples after {limit} tries; "
                             f"ask for fewer or widen the options (e.g. longer max_len)")
        example = make_example(rng, **options)
        if example[0] in seen:
            continue
        seen.add(example[0])
        split = split_of(key_of(example))
        label = example[1] if name in LABELS else None
        if quota[split, label] > 0:
            quota[split, label] -= 1
            out[split].append(example)
    return TaskSplits(name, out["train"], out["val"], out["test"])


# --------------------------------------------------------------------------- instructions (lesson 12)

class Instruction(NamedTuple):
    kind: str
    prompt: str
    response: str


# kind -> (instruction words, the exact answer for a digit string d)
INSTRUCTION_KINDS = {
    "first": ("First digit of", lambda d: d[0]),
    "second": ("Second digit of", lambda d: d[1]),
    "last": ("Last digit of", lambda d: d[-1]),
    "largest": ("Largest digit of", max),
    "smallest": ("Smallest digit of", min),
    "count": ("How many digits in", lambda d: str(len(d))),
    "sort": ("Sort", lambda d: "".join(sorted(d))),
}
DEFAULT_KINDS = ("first", "second", "last", "largest", "smallest", "sort")  # "count" needs varied lengths


def instruction_data(n: int, seed: int = 0, kinds: Sequence[str] = DEFAULT_KINDS,
                     lengths: tuple[int, int] = (4, 4)) -> list[Instruction]:
    """``n`` seeded instructions about a random digit string, e.g. ("sort", "Sort 3141", "1134").

    Each response is exact (one right answer). kinds: names from INSTRUCTION_KINDS; lengths: the
    smallest and largest number of digits (4 and 4 by default: 60,000 different prompts).
    Raises ValueError when n is not an int >= 0, kinds is a single str or holds unknown names, or
    lengths is not (smallest, largest) with 2 <= smallest <= largest.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n (the number of instructions) must be an int >= 0, got {n!r}")
    if isinstance(kinds, str):
        raise ValueError(f"kinds must be a list of names, got the str {kinds!r}: write kinds=[{kinds!r}]")
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in INSTRUCTION_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be names from {list(INSTRUCTION_KINDS)}, got {kinds}")
    if not 2 <= lengths[0] <= lengths[1]:
        raise ValueError(f"lengths must be (smallest, largest) with 2 <= smallest <= largest, got {lengths}")
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        kind = rng.choice(kinds)
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(*lengths)))
        words, answer = INSTRUCTION_KINDS[kind]
        data.append(Instruction(kind, f"{words} {digits}", answer(digits)))
    return data


def instruction_splits(n_train: int, n_heldout: int, seed: int = 0,
                       **options) -> tuple[list[Instruction], list[Instruction]]:
    """(train, held_out): no held-out prompt occurs in train; duplicates inside held-out removed."""
    train = instruction_data(n_train, seed=2 * seed, **options)
    seen = {example.prompt for example in train}
    held_out = []
    for example in instruction_data(4 * n_heldout, seed=2 * seed + 1, **options):
        if example.prompt not in seen and len(held_out) < n_heldout:
            held_out.append(example)
            seen.add(example.prompt)
    return train, held_out
