"""Execute notebooks in place, top to bottom in a fresh kernel (Restart & Run All),
and print how long each took.

    python tools/run_notebooks.py notebooks/03_attention.ipynb [more.ipynb ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = "tfm-course"
# Same as the test suite (conftest.py): one thread per kernel, so outputs reproduce anywhere.
# Pass --threads 0 to keep PyTorch's default (to time a lesson as a learner runs it).


def run(path: Path, timeout: int, save: bool = True) -> float:
    nb = nbformat.read(path, as_version=4)
    # "python3" resolves to this interpreter (jupyter_client maps it to sys.executable), like nbval's
    # --nbval-current-env; the saved metadata still names the course's kernel for JupyterLab.
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python (Transformers course)", "language": "python"}
    if save:
        nbformat.write(nb, path)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/MKL threads per kernel (default 1, as in the tests; 0 = PyTorch's default)")
    parser.add_argument("--dry-run", action="store_true", help="execute and time, but do not save")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if args.threads:
            os.environ[var] = str(args.threads)
        else:
            os.environ.pop(var, None)
    for path in args.paths:
        seconds = run(path, args.timeout, save=not args.dry_run)
        print(f"{path}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
