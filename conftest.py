"""Loaded by every pytest run of this repo, before nbval starts any kernel.

Notebook kernels inherit this environment. One BLAS/OpenMP thread per kernel makes the
committed outputs reproducible on any machine (the order of floating-point sums in a
matrix product depends on the thread count) and lets pytest-xdist run two notebooks
side by side on two cores without oversubscription. tools/run_notebooks.py, which
regenerates the committed outputs, sets the same.
"""
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
