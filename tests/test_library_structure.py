"""tfmlib's structure: no import cycles between its modules (not even through imports hidden inside
functions), modules stay readable, and names moved between modules still import from the old place."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tfmlib"


def _imports(path: Path, package: str) -> set[str]:
    """Modules of tfmlib that ``path`` imports, anywhere in the file (``from .x import``, ``from ..x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            name = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x
                found.update(f"{name}.{alias.name}" for alias in node.names)
            else:
                found.add(name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfmlib"):
            found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        modules[name.removesuffix(".__init__")] = _imports(path, package.removesuffix(".__init__"))
    return {m: {d for d in deps if d in modules and d != m and d != "tfmlib"} for m, deps in modules.items()}


def test_no_import_cycles_between_tfmlib_modules():
    graph = _graph()
    assert "tfmlib.data" not in graph["tfmlib.tasks"] and "tfmlib.vocab" in graph["tfmlib.tasks"]
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("path", sorted(p for p in ROOT.rglob("*.py")), ids=lambda p: p.name)
def test_modules_stay_readable(path):
    assert len(path.read_text().splitlines()) <= 420, f"{path.name} is long: split it by concept"


def test_moved_names_still_import_from_their_old_place():
    from tfmlib.bert import EncoderConfig as from_bert
    from tfmlib.config import EncoderConfig
    from tfmlib.data import Vocab as from_data
    from tfmlib.data import pad_sequences
    from tfmlib.vocab import Vocab
    assert from_bert is EncoderConfig and from_data is Vocab and callable(pad_sequences)
