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

Cells tagged ``solution-only`` are dropped; every output and execution count is cleared.

    python tools/make_exercises.py            # write exercises/
    python tools/make_exercises.py --check    # exit 1 if exercises/ is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?::\s*(?P<hint>.*\S))?\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
DEFAULT_HINT = "Write your code here."


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION region with a NotImplementedError stub."""
    out, inside = [], False
    for line in source.splitlines():
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise ValueError(f"{where}: nested '### BEGIN SOLUTION'")
            inside = True
            hint = (begin.group("hint") or DEFAULT_HINT).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'{begin.group("indent")}raise NotImplementedError("{hint}")')
        elif END.match(line):
            if not inside:
                raise ValueError(f"{where}: '### END SOLUTION' without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '### BEGIN SOLUTION' without an END")
    return "\n".join(out)


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
    nbformat.validator.normalize(nb)
    return nb


def render(solution: Path) -> str:
    nb = nbformat.read(solution, as_version=4)
    return nbformat.writes(exercise_from_solution(nb, solution.stem)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether exercises/ is up to date")
    args = parser.parse_args()
    stale = []
    solutions = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    wanted = {s.name for s in solutions}
    for solution in solutions:
        target = ROOT / "exercises" / solution.name
        text = render(solution)
        if not target.exists() or target.read_text() != text:
            stale.append(target.name)
            if not args.check:
                target.parent.mkdir(exist_ok=True)
                target.write_text(text)
    extra = [p.name for p in (ROOT / "exercises").glob("*.ipynb") if p.name not in wanted]
    if args.check:
        if stale or extra:
            print(f"exercises/ is out of date: {sorted(stale)} differ, {sorted(extra)} have no solution. "
                  "Run `make exercises`.")
            return 1
        print(f"exercises/ is up to date ({len(solutions)} notebooks)")
        return 0
    print(f"wrote {len(stale)} of {len(solutions)} exercise notebooks" + (f"; no solution for {extra}" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
