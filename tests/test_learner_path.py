"""The learner's path through the course: links that resolve, figures that fit a notebook column, progress on
long cells, hints readable without scrolling, regenerating exercises never loses a learner's edits, the kernel
is this checkout's environment, and the Makefile's CPU-only install asks for the tested PyTorch range."""
import base64
import importlib.util
import json
import re
import struct
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "exercises", "solutions")
                   for p in (ROOT / folder).glob("[0-9][0-9]_*.ipynb"))
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_FIGURE_WIDTH = 860      # px: JupyterLab shows about 850 px of output in a common window
LONG_CELL_SECONDS = 20      # a committed cell that ran this long must show a progress bar (a margin over the
                            # ~5 s rule: committed timings come from whatever machine ran `make notebooks`)

spec = importlib.util.spec_from_file_location("make_exercises", ROOT / "tools" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_exercises)

LINK = re.compile(r'\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+"[^"]*")?\s*\)|(?:href|src)="([^"]+)"')


def _links(markdown: str) -> list[str]:
    return [a or b or c for a, b, c in LINK.findall(markdown)]


def _relative(target: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", target, re.I)


def _markdown_sources():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        yield path, "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    yield ROOT / "README.md", (ROOT / "README.md").read_text()


def test_every_relative_link_resolves():
    broken, checked = [], 0
    for path, text in _markdown_sources():
        for target in filter(_relative, _links(text)):
            resolved = (path.parent / unquote(target.split("#")[0])).resolve()
            checked += 1
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert checked > 50, f"only {checked} relative links found: is the link pattern still right?"
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_link_pattern_finds_markdown_and_html_links():
    text = 'see [a](x.ipynb), [b](<../y z.ipynb>), [web](https://x.org), <img src="f.png"> and [c](#top)'
    assert [t for t in _links(text) if _relative(t)] == ["x.ipynb", "../y z.ipynb", "f.png"]


@pytest.mark.parametrize("lesson", [p for p in LESSONS if (ROOT / "solutions" / p.name).exists()],
                         ids=lambda p: p.stem)
def test_each_lesson_links_to_its_exercise_solution_and_neighbours(lesson):
    nb = nbformat.read(lesson, as_version=4)
    targets = {t.split("#")[0] for t in _links("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))}
    wanted = {f"../exercises/{lesson.name}", f"../solutions/{lesson.name}"}
    assert wanted <= targets, f"{lesson.name} does not link to {sorted(wanted - targets)}"
    neighbours = {t for t in targets if re.fullmatch(r"\d\d_\w+\.ipynb", t)}
    i = LESSONS.index(lesson)   # the previous and next lessons that exist (numbers may skip one still to come)
    if i > 0:
        assert LESSONS[i - 1].name in neighbours, f"{lesson.name}: no link to the previous lesson {LESSONS[i - 1].name}"
    if i + 1 < len(LESSONS):
        assert LESSONS[i + 1].name in neighbours, f"{lesson.name}: no link to the next lesson {LESSONS[i + 1].name}"


def _png_width(data: str) -> int:
    return struct.unpack(">I", base64.b64decode(data)[16:20])[0]


def test_committed_figures_fit_a_notebook_column():
    too_wide = []
    for path in LESSONS + sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                png = out.get("data", {}).get("image/png")
                if png and _png_width(png) > MAX_FIGURE_WIDTH:
                    too_wide.append(f"{path.relative_to(ROOT)} cell {i}: {_png_width(png)} px")
    assert not too_wide, f"figures wider than {MAX_FIGURE_WIDTH} px (use figsize width <= tfmlib.plotting.COLUMN_WIDTH):\n" \
        + "\n".join(too_wide)


def _seconds(cell) -> float:
    times = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in times or "shell.execute_reply" not in times:
        return 0.0
    start, end = (datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def _shows_progress(cell) -> bool:
    for out in cell.get("outputs", []):
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
            return True   # tqdm.auto's bar in a notebook
        if out.get("name") == "stderr" and re.search(r"\d+/\d+ \[", out.get("text", "")):
            return True   # tqdm's text bar
    return False


def test_long_cells_show_a_progress_bar():
    silent = []
    for path in LESSONS:
        nb = nbformat.read(path, as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        for i, cell in enumerate(nb.cells):
            # the first code cell imports the libraries: that takes what it takes, no bar can help
            if (cell.cell_type == "code" and cell is not code_cells[0] and _seconds(cell) > LONG_CELL_SECONDS
                    and not _shows_progress(cell)):
                silent.append(f"{path.relative_to(ROOT)} cell {i} ({_seconds(cell):.0f} s)")
    assert not silent, "long cells with nothing moving (pass progress=... to fit, or wrap the loop in tqdm):\n" \
        + "\n".join(silent)


def test_cells_with_a_progress_bar_are_not_compared_as_text():
    """A bar's text (rates, times) changes on every run: strict nbval must skip such a cell's output."""
    compared = []
    for path in LESSONS + sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if _shows_progress(cell) and "nbval-ignore-output" not in cell.metadata.get("tags", []):
                compared.append(f"{path.relative_to(ROOT)} cell {i}")
    assert not compared, "progress bars in cells without the nbval-ignore-output tag:\n" + "\n".join(compared)


def test_stub_lines_fit_without_scrolling_and_keep_the_whole_hint():
    hint = ("Encode once; decoder_in = (B, 1) of bos_id; loop max_len times: argmax of decode(...)[:, -1], "
            'pad_id where "finished", append; return decoder_in[:, 1:].')
    source = make_exercises.strip_solutions(f"def f(x):\n    ### BEGIN SOLUTION: {hint}\n    return x\n"
                                            "    ### END SOLUTION")
    assert max(len(line) for line in source.splitlines()) <= make_exercises.MAX_LINE
    namespace = {}
    exec(source, namespace)
    with pytest.raises(NotImplementedError) as raised:
        namespace["f"](1)
    assert str(raised.value) == hint
    for path in sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and "NotImplementedError(" in cell.source:
                stub_lines, inside = [], False
                for line in cell.source.splitlines():
                    inside = inside or "raise NotImplementedError(" in line
                    if inside:
                        stub_lines.append(line)
                        inside = not line.rstrip().endswith(")")
                assert all(len(ln) <= make_exercises.MAX_LINE for ln in stub_lines), (path.name, stub_lines)


def test_the_not_implemented_verdict_repeats_the_stubs_hint():
    from tfmlib.checks.core import call, check

    @check("double")
    def check_double(fn):
        call(fn, 2)

    def stub(x):
        raise NotImplementedError("Multiply by two.")

    result = check_double(stub)
    assert result.status == "not implemented"
    assert "not implemented yet" in repr(result) and "Hint: Multiply by two." in repr(result)


def _mini_course(tmp_path: Path) -> Path:
    (tmp_path / "solutions").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 01 · Exercises"),
                nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION: Return twice x.\n    return 2 * x\n"
                                          "    ### END SOLUTION")]
    nbformat.write(nb, tmp_path / "solutions" / "01_demo.ipynb")
    return tmp_path


def test_regenerating_exercises_keeps_a_learners_edits(tmp_path):
    root = _mini_course(tmp_path)
    exercise = root / "exercises" / "01_demo.ipynb"
    assert make_exercises.update(root)[0] == 0 and exercise.exists()

    # run but not edited: outputs only, nothing of the learner's is lost by regenerating
    nb = nbformat.read(exercise, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    nbformat.write(nb, exercise)
    assert not make_exercises.edited_by_learner(exercise)

    # edited: kept as it is, and the message says so and how to start over
    nb.cells[1].source = "def f(x):\n    return x + x   # my answer"
    nbformat.write(nb, exercise)
    edited = exercise.read_text()
    solution = root / "solutions" / "01_demo.ipynb"
    sol = nbformat.read(solution, as_version=4)
    sol.cells[0].source = "# 01 · Exercises (new wording)"
    nbformat.write(sol, solution)
    code, lines = make_exercises.update(root)
    assert code == 0 and exercise.read_text() == edited
    assert any("kept your edited exercises/01_demo.ipynb" in line and "FORCE=1" in line for line in lines)

    # --force: the learner's version is copied to exercises/backups/ first, and the message says where
    code, lines = make_exercises.update(root, force=True, stamp="20250101-000000")
    backup = root / "exercises" / "backups" / "01_demo-20250101-000000.ipynb"
    assert backup.read_text() == edited
    assert any("exercises/backups/01_demo-20250101-000000.ipynb" in line for line in lines)
    assert "new wording" in exercise.read_text() and "my answer" not in exercise.read_text()
    assert make_exercises.update(root, check=True)[0] == 0


def test_makefile_cpu_option_installs_the_tested_torch_range():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if d.startswith("torch"))
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^TORCH_SPEC\s*:=\s*{re.escape(torch_req)}\s*$", makefile, re.M), \
        f"Makefile's TORCH_SPEC differs from pyproject's {torch_req!r}"
    assert re.search(r"^TORCH_CPU_INDEX\s*:=\s*https://download\.pytorch\.org/whl/cpu\s*$", makefile, re.M)
    assert re.search(r"^cpu:", makefile, re.M) and "make cpu" in (ROOT / "README.md").read_text()


def test_the_course_kernel_is_this_checkouts_environment(monkeypatch):
    """The kernelspec lives inside this environment (make setup / make lab register it there), so JupyterLab
    started from it runs this environment's Python, whatever another clone registered for the user."""
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    spec_dir = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "tfm-course"
    if not spec_dir.exists():
        pytest.skip("the course kernel is not registered in this environment (`make kernel` does it)")
    argv0 = json.loads((spec_dir / "kernel.json").read_text())["argv"][0]
    assert Path(argv0).resolve().parent == Path(sys.executable).resolve().parent
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")   # as the Makefile exports it
    found = kernelspec.KernelSpecManager().get_kernel_spec("tfm-course")
    assert Path(found.resource_dir).resolve() == spec_dir.resolve()


@pytest.mark.parametrize("heads, length", [(1, 4), (4, 10), (8, 30)])
def test_shared_figures_fit_a_notebook_column(heads, length):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from tfmlib.plotting import COLUMN_WIDTH, plot_attention, plot_heads
    weights = torch.softmax(torch.randn(heads, length, length), dim=-1)
    figures = [plot_heads(weights), plot_attention(weights[0]).figure]
    try:
        for fig in figures:
            assert fig.get_size_inches()[0] <= COLUMN_WIDTH + 1e-9
            assert all(ax.get_xlabel() or not ax.images for ax in fig.axes if ax.get_subplotspec().is_last_row())
    finally:
        for fig in figures:
            plt.close(fig)
