"""The two numerical configurations the test suite runs the notebooks under (see conftest.py).

A float32 result depends on the order of its sums, and that order depends on the machine: how many threads
split a reduction, and how wide the vector instructions are that MKL's matrix products and PyTorch's own
kernels use. Measured here (tests/test_numerics.py): the thread count moves reductions such as
``(x * x).mean()``, MKL's instruction set moves matrix products, and both move any chain built on them.

    reference   1 thread, the CPU's best instructions: how committed outputs are produced (`make notebooks`)
    other       2 threads, MKL/oneDNN/ATen capped one vector width lower: another machine, or a learner's
                kernel. Strict nbval passes under both only if no committed number depends on the machine.
"""
from __future__ import annotations

import os

NAMES = ("reference", "other")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_OTHER_VARS = ("TFM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512f" in f.read()
    except OSError:  # not Linux: the caps below still name valid, lower instruction sets
        return False


def environment(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) set up for configuration ``name``.

    Raises ValueError for a name other than 'reference' or 'other'.
    """
    if name not in NAMES:
        raise ValueError(f"TFM_NUMERICS must be one of {NAMES}, got {name!r}")
    env = dict(os.environ if base is None else base)
    for var in _THREAD_VARS + _OTHER_VARS:
        env.pop(var, None)
    if name == "reference":
        for var in _THREAD_VARS:
            env[var] = "1"
    else:
        wide = _cpu_has_avx512()   # one vector width below this CPU's best
        env["TFM_THREADS"] = "2"   # tfmlib's thread rule (utils.configure_threads) reads it in every kernel
        env["ATEN_CPU_CAPABILITY"] = "avx2" if wide else "default"
        env["MKL_ENABLE_INSTRUCTIONS"] = "AVX2" if wide else "SSE4_2"
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2" if wide else "SSE41"
    env["TFM_NUMERICS"] = name
    return env
