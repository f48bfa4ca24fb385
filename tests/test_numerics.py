"""The portability check has teeth: the 'other' configuration really moves float32 rounding here, each
configuration is deterministic on its own, and tfmlib's CPU thread rule does what its docstring says."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tfmlib
from tfmlib.utils import MAX_DEFAULT_THREADS, configure_threads

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tfm_numerics", ROOT / "tools" / "numerics.py")
numerics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(numerics)

# A reduction over a million numbers, a mean of squares, and a chain of 50 small matrix products through tanh:
# the three kinds of computation behind the fragile cells found in the lessons (losses, norms, deep stacks).
PROBE = """
import torch, tfmlib
g = torch.Generator().manual_seed(0)
x = torch.randn(1_000_003, generator=g)
a = torch.randn(96, 96, generator=g) / 96 ** 0.5
h = torch.randn(8, 96, generator=g)
for _ in range(50):
    h = torch.tanh(h @ a) * 1.5
print(torch.get_num_threads(), repr((x * x).mean().item()), repr(h.sum().item()))
"""


def run_probe(name):
    out = subprocess.run([sys.executable, "-c", PROBE], env=numerics.environment(name), capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def test_configurations_move_rounding_and_are_each_deterministic():
    ref, ref_again, other = run_probe("reference"), run_probe("reference"), run_probe("other")
    assert ref == ref_again, "the reference configuration must reproduce itself bit for bit"
    assert ref[0] == 1 and other[0] == 2, f"threads: reference {ref[0]}, other {other[0]}"
    # the same numbers to float32 accuracy ...
    assert other[1] == pytest.approx(ref[1], rel=1e-5) and other[2] == pytest.approx(ref[2], rel=1e-3)
    # ... but not the same bits: if this fails, the second nbval run no longer catches fragile outputs
    assert (other[1], other[2]) != (ref[1], ref[2]), "the 'other' configuration no longer changes rounding"


def test_environment_rejects_unknown_name():
    with pytest.raises(ValueError, match="reference"):
        numerics.environment("fast")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_configure_threads_rules(monkeypatch, restore_threads):
    monkeypatch.delenv("TFM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert configure_threads() == 1                              # OMP_NUM_THREADS set: PyTorch's choice stands
    assert configure_threads(3) == 3 == torch.get_num_threads()  # an explicit count wins
    monkeypatch.setenv("TFM_THREADS", "2")
    assert configure_threads() == 2 == torch.get_num_threads()   # then TFM_THREADS
    monkeypatch.delenv("TFM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    for cores, expected in ((1, 1), (2, 1), (4, 2), (8, MAX_DEFAULT_THREADS), (64, MAX_DEFAULT_THREADS)):
        torch.set_num_threads(cores)                             # stands in for PyTorch's default
        assert configure_threads() == expected, f"{cores} cores"
    assert tfmlib.configure_threads is configure_threads


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_configure_threads_rejects_bad_counts(monkeypatch, restore_threads, bad):
    monkeypatch.setenv("TFM_THREADS", bad)
    with pytest.raises(ValueError, match="TFM_THREADS|at least 1") as err:
        configure_threads()
    assert bad in str(err.value) or "at least 1" in str(err.value)
