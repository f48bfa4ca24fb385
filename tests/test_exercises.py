"""exercises/ is generated from solutions/ (the single source), runs end to end, and its
checks report "not implemented yet"; solutions/ show every check passing."""
import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))

spec = importlib.util.spec_from_file_location("make_exercises", ROOT / "tools" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_exercises)


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_strip_solutions_keeps_indent_and_hint():
    src = ("def f(x):\n    ### BEGIN SOLUTION: Use \"x * 2\".\n    y = x * 2\n    return y\n"
           "    ### END SOLUTION\n\nprint(1)")
    out = make_exercises.strip_solutions(src)
    assert out == 'def f(x):\n    raise NotImplementedError("Use \\"x * 2\\".")\n\nprint(1)'
    namespace = {}
    exec(out, namespace)
    with pytest.raises(NotImplementedError, match='Use "x \\* 2".'):
        namespace["f"](3)


def test_strip_solutions_default_hint_and_unbalanced_markers():
    assert "Write your code here." in make_exercises.strip_solutions("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")
    with pytest.raises(ValueError, match="without an END"):
        make_exercises.strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without a BEGIN"):
        make_exercises.strip_solutions("x = 1\n### END SOLUTION")


def test_exercises_are_up_to_date_with_solutions():
    stale = [s.name for s in SOLUTIONS
             if not (ROOT / "exercises" / s.name).exists()
             or (ROOT / "exercises" / s.name).read_text() != make_exercises.render(s)]
    extra = sorted(p.name for p in (ROOT / "exercises").glob("*.ipynb")
                   if p.name not in {s.name for s in SOLUTIONS})
    assert not stale and not extra, f"run `make exercises`: stale {stale}, without solution {extra}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_notebook_shows_every_check_passing(solution):
    nb = nbformat.read(solution, as_version=4)
    text = _outputs_text(nb)
    assert "BEGIN SOLUTION" in "".join(c.source for c in nb.cells), "a solution notebook needs solution regions"
    assert "✅" in text, "no check verdicts in the committed outputs: execute the notebook"
    assert "❌" not in text and "⏳" not in text, "a check in the committed solution does not pass"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_exercise_notebook_runs_and_reports_not_implemented(solution):
    path = ROOT / "exercises" / solution.name
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = _outputs_text(nb)
    stubs = sum(c.source.count("raise NotImplementedError(") for c in nb.cells if c.cell_type == "code")
    assert stubs >= 3, f"{path.name}: expected at least three exercises, found {stubs} stubs"
    assert "not implemented yet" in text
    assert "✅" not in text and "❌" not in text, "with stubs only, no check may pass or fail"


def _partly_solved(solution: Path, keep_solved: int) -> nbformat.NotebookNode:
    """The exercise notebook with every other exercise solved (keep_solved = 0: the 1st, 3rd, ...;
    1: the 2nd, 4th, ...), as a learner halfway through has it."""
    nb = nbformat.read(solution, as_version=4)
    exercise = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            if exercise % 2 != keep_solved:
                cell.source = make_exercises.strip_solutions(cell.source, f"{solution.name}, cell {i}")
            else:  # solved: the solution stays, without its markers
                cell.source = "\n".join(line for line in cell.source.splitlines()
                                        if not (make_exercises.BEGIN.match(line) or make_exercises.END.match(line)))
            exercise += 1
    return make_exercises.exercise_from_solution(nb, solution.stem)


@pytest.mark.parametrize("keep_solved", [0, 1], ids=["odd-solved", "even-solved"])
@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_a_partly_solved_exercise_notebook_shows_no_traceback(solution, keep_solved):
    """No cell of an exercise notebook shows a raw traceback, whichever exercises are still stubs
    (all stubs: the test above; all solved: the solution notebooks)."""
    nb = _partly_solved(solution, keep_solved)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(solution.parent)}}).execute()
    errors = [(i, out.get("ename"), out.get("evalue", "")[:200]) for i, cell in enumerate(nb.cells)
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{solution.name} with some exercises solved shows tracebacks: {errors}"
    assert "not implemented yet" in _outputs_text(nb)
