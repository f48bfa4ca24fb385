"""Execute notebooks in place, top to bottom in a fresh kernel (Restart & Run All), and print each one's time.

    python tools/run_notebooks.py notebooks/03_attention.ipynb [more.ipynb ...]
    python tools/run_notebooks.py --config learner --dry-run notebooks/06_*.ipynb   # time it as a learner would

--config reference (default) is how committed outputs are made: the test suite's first configuration
(tools/numerics.py). 'other' is its second; 'learner' is a plain kernel, where tfmlib picks the thread count
(tfmlib.utils.configure_threads), as in JupyterLab.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbclient.util import ensure_async

import numerics  # tools/numerics.py: this script's folder is on sys.path

KERNEL = "tfm-course"


class _Client(NotebookClient):
    """nbclient, waiting for the kernel's replies in short slices.

    A cell with an ipywidgets `interact` can leave nbclient's single long wait on the shell channel asleep
    after the reply has arrived (jupyter/nbclient#312), so a run stalled until the per-cell timeout. Short
    waits in a loop see the reply at once; the overall deadline is unchanged.
    """

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        channel = kc.shell_channel
        get_msg = channel.get_msg

        async def get_msg_in_slices(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                try:
                    return await ensure_async(get_msg(timeout=left))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        channel.get_msg = get_msg_in_slices
        return kc


def run(path: Path, timeout: int, env: dict[str, str], save: bool = True) -> float:
    nb = nbformat.read(path, as_version=4)
    # "python3" resolves to this interpreter (jupyter_client maps it to sys.executable), like nbval's
    # --nbval-current-env; the saved metadata still names the course's kernel for JupyterLab.
    client = _Client(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    old_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)   # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    elapsed = time.perf_counter() - start
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python (Transformers course)", "language": "python"}
    if save:
        nbformat.write(nb, path)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    parser.add_argument("--config", choices=(*numerics.NAMES, "learner"), default="reference",
                        help="numerical configuration (default: reference, as committed outputs are made)")
    parser.add_argument("--dry-run", action="store_true", help="execute and time, but do not save")
    args = parser.parse_args()
    if args.config == "learner":
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TFM_THREADS", "TFM_NUMERICS")}
    else:
        env = numerics.environment(args.config)
    for path in args.paths:
        seconds = run(path, args.timeout, env, save=not args.dry_run)
        print(f"{path}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
