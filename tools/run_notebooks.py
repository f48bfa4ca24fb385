"""Execute notebooks in place, top to bottom in a fresh kernel (Restart & Run All),
and print how long each took.

    python tools/run_notebooks.py notebooks/03_attention.ipynb [more.ipynb ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = "tfm-course"


def run(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    # "python3" resolves to this interpreter (jupyter_client maps it to sys.executable), like nbval's
    # --nbval-current-env; the saved metadata still names the course's kernel for JupyterLab.
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python (Transformers course)", "language": "python"}
    nbformat.write(nb, path)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args()
    for path in args.paths:
        seconds = run(path, args.timeout)
        print(f"{path}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
