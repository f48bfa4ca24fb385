"""Loaded by every pytest run of this repo, before nbval starts any kernel; kernels inherit os.environ.

The environment variable TFM_NUMERICS picks one of two numerical configurations (tools/numerics.py);
`make test` runs the notebooks under both:

reference (default)
    One BLAS/OpenMP thread per kernel, the CPU's best vector instructions. `make notebooks` regenerates the
    committed outputs this way, and two xdist workers share two cores without oversubscription.
other
    What another machine or a learner's own kernel does to float rounding: 2 threads, and MKL's, oneDNN's
    and PyTorch's kernels one vector width lower. A committed output that changes under it would change on
    some learner's machine too, so strict nbval fails here, before it lands (README, "Portable outputs").
"""
import importlib.util
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location("tfm_numerics", Path(__file__).parent / "tools" / "numerics.py")
numerics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(numerics)

NUMERICS = os.environ.get("TFM_NUMERICS", "reference")
_env = numerics.environment(NUMERICS)
for _var in set(os.environ) - set(_env):
    del os.environ[_var]
os.environ.update(_env)
