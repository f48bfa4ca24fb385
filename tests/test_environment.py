"""environment.yml (conda) and pyproject.toml (pip) declare the same packages."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    conda = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s{6}- (.+)$", line)  # the pip: sub-list
        if m and not m.group(1).startswith("-e"):
            conda.add(_norm(m.group(1)))
    assert conda == declared, f"only in environment.yml: {sorted(conda - declared)}; only in pyproject: {sorted(declared - conda)}"
    assert re.search(r"^\s+- python>=3\.11$", (ROOT / "environment.yml").read_text(), re.M)
    assert project["requires-python"] == ">=3.11"


def test_torch_range_is_bounded_so_no_cuda_build_is_pulled():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if d.startswith("torch"))
    assert "<" in torch_req and ">=" in torch_req, torch_req


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    assert "make test-ui" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-2:] == ["make test", "make test-ui"]
