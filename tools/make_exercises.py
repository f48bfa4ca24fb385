"""Write exercises/NN_*.ipynb from solutions/NN_*.ipynb (the single source).

Inside a solution's code cell, a region

    def softmax(scores):
        ### BEGIN SOLUTION: Subtract the row max, exponentiate, divide by the row sum.
        shifted = scores - scores.max(dim=-1, keepdim=True).values
        ...
        ### END SOLUTION

becomes, in the exercise, a stub at the same indentation:

    def softmax(scores):
        raise NotImplementedError("Subtract the row max, exponentiate, divide by the row sum.")

A hint too long for one line of about 100 characters is wrapped over several string lines, so JupyterLab
shows it without scrolling; the check under an untouched stub repeats it (tfmlib.checks.core).
Cells tagged ``solution-only`` are dropped; every output and execution count is cleared.

A learner's work is never overwritten. Each exercise records a fingerprint of the cell sources it was
generated with (notebook metadata ``tfm_course.sources_sha256``). A notebook whose sources no longer match
it (edited by its learner) is kept as it is and reported; with --force it is first copied to
exercises/backups/NAME-YYYYmmdd-HHMMSS.ipynb, then regenerated.

    python tools/make_exercises.py            # write exercises/, keeping edited notebooks
    python tools/make_exercises.py --force    # also regenerate edited ones, after backing them up
    python tools/make_exercises.py --check    # exit 1 if exercises/ is out of date
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import textwrap
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?::\s*(?P<hint>.*\S))?\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
DEFAULT_HINT = "Write your code here."
MAX_LINE = 100          # characters of a stub line; JupyterLab shows about 107 in a default window
BACKUPS = "backups"     # exercises/backups/: learners' edited notebooks, copied before --force rewrites them


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stub(indent: str, hint: str) -> list[str]:
    """`raise NotImplementedError("hint")` at ``indent``: one line if it fits in MAX_LINE, else the hint
    wrapped over implicitly concatenated string lines (the exception's message is still the whole hint)."""
    one_line = f"{indent}raise NotImplementedError({_quote(hint)})"
    if len(one_line) <= MAX_LINE:
        return [one_line]
    inner = indent + " " * 4
    pieces = textwrap.wrap(hint, width=MAX_LINE - len(inner) - 4, break_long_words=False, break_on_hyphens=False)
    lines = [f"{indent}raise NotImplementedError("]
    lines += [inner + _quote(piece + ("" if i == len(pieces) - 1 else " ")) for i, piece in enumerate(pieces)]
    lines[-1] += ")"
    return lines


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION region with a NotImplementedError stub."""
    out, inside = [], False
    for line in source.splitlines():
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise ValueError(f"{where}: nested '### BEGIN SOLUTION'")
            inside = True
            out.extend(stub(begin.group("indent"), begin.group("hint") or DEFAULT_HINT))
        elif END.match(line):
            if not inside:
                raise ValueError(f"{where}: '### END SOLUTION' without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '### BEGIN SOLUTION' without an END")
    return "\n".join(out)


def sources_fingerprint(nb: nbformat.NotebookNode) -> str:
    """sha256 of every cell's type and source: what a learner edits (outputs and ids do not count)."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(f"{cell.cell_type}\0{cell.source}\0".encode())
    return digest.hexdigest()


def exercise_from_solution(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)  # deep copy
    cells = []
    for i, cell in enumerate(nb.cells):
        if "solution-only" in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"{name}, cell {i}")
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cell["id"] = f"{name[:20]}-{len(cells)}"  # stable ids: regenerating changes nothing
        cells.append(cell)
    nb.cells = cells
    nb.metadata["tfm_course"] = {"generated_from": f"solutions/{name}.ipynb",
                                 "sources_sha256": sources_fingerprint(nb)}
    nbformat.validator.normalize(nb)
    return nb


def render(solution: Path) -> str:
    nb = nbformat.read(solution, as_version=4)
    return nbformat.writes(exercise_from_solution(nb, solution.stem)) + "\n"


def edited_by_learner(path: Path) -> bool:
    """True when the notebook's sources differ from those it was generated with (or it cannot be read)."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook is kept, never overwritten
        return True
    recorded = nb.metadata.get("tfm_course", {}).get("sources_sha256")
    return recorded != sources_fingerprint(nb)


def update(root: Path = ROOT, force: bool = False, check: bool = False, stamp: str | None = None) -> tuple[int, list[str]]:
    """Bring root/exercises up to date with root/solutions. Returns (exit code, lines to print)."""
    solutions = sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb"))
    wanted = {s.name for s in solutions}
    stale, kept, backed_up = [], [], []
    for solution in solutions:
        target = root / "exercises" / solution.name
        text = render(solution)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target.name)
        if check:
            continue
        if target.exists() and edited_by_learner(target):
            if not force:
                kept.append(target)
                continue
            backup = root / "exercises" / BACKUPS / f"{target.stem}-{stamp or time.strftime('%Y%m%d-%H%M%S')}.ipynb"
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, backup)
            backed_up.append((target, backup))
        target.parent.mkdir(exist_ok=True)
        target.write_text(text)
    extra = sorted(p.name for p in (root / "exercises").glob("*.ipynb") if p.name not in wanted)
    if check:
        if stale or extra:
            return 1, [f"exercises/ is out of date: {sorted(stale)} differ, {extra} have no solution. "
                       "Run `make exercises`."]
        return 0, [f"exercises/ is up to date ({len(solutions)} notebooks)"]
    lines = [f"wrote {len(stale) - len(kept)} of {len(solutions)} exercise notebooks"
             + (f"; no solution for {extra}" if extra else "")]
    for target, backup in backed_up:
        lines.append(f"your edited {target.relative_to(root)} was saved as {backup.relative_to(root)} first")
    for target in kept:
        lines.append(f"kept your edited {target.relative_to(root)} as it is (not regenerated). To start it over: "
                     f"`make exercises FORCE=1` saves your version in exercises/{BACKUPS}/, then rewrites it")
    return 0, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether exercises/ is up to date")
    parser.add_argument("--force", action="store_true",
                        help=f"also regenerate notebooks a learner edited, after copying them to exercises/{BACKUPS}/")
    args = parser.parse_args()
    code, lines = update(ROOT, force=args.force, check=args.check)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
