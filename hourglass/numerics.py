"""CPU numerics: one portable instruction-set level so that a seed trains the same weights on any
x86-64 CPU.

Float sums come out differently with different vector widths and with different splits across
threads, and 30 epochs of training grow those last-bit differences into other PCKh tables. The
``portable`` mode (the default) therefore holds the numerical libraries this project loads to
AVX2 + FMA (x86-64-v3, every mainstream x86 CPU since about 2015; MKL to its vendor-neutral
branch) and runs one torch thread per CPU process, whatever the machine offers; ``native`` leaves
the libraries and the thread count alone (faster on AVX-512 CPUs and with many cores; numbers
tied to the machine and the thread count).

The limits are environment variables read when each library loads, so :func:`apply` must run
before torch, NumPy or OpenCV is imported (``alpose`` calls it first thing; it also reaches the
worker processes through the environment). This module imports nothing heavy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from hourglass.errors import AlposeError

MODES = ("portable", "native")
DEFAULT = "portable"
MODE_ENV = (
    "ALPOSE_NUMERICS"  # the mode, for processes that read no config (workers, `alpose bench`)
)
PORTABLE_THREADS = 1  # torch threads per CPU process: the one count every machine has

# Library -> variable: the AVX2 level of ATen (PyTorch's own kernels), oneDNN (convolutions) and
# OpenBLAS (NumPy/SciPy). MKL (matrix products, small 1x1 convolutions, exp) takes its
# vendor-neutral conditional-numerical-reproducibility branch: its AVX2 branch gave other bits on
# an emulated Intel CPU than on this AMD one, COMPATIBLE the same on both
# (docs/studies/2026-12-04-portable-numerics.md).
LIMITS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
    "OPENBLAS_CORETYPE": "Haswell",
}
# NumPy's and OpenCV's own dispatched loops are switched off feature by feature (names of NumPy
# >= 2.4 and OpenCV 4/5); both complain about a feature the CPU lacks, so only AVX-512 CPUs get them.
AVX512_OFF: dict[str, str] = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL",
}
V3_FLAGS = {"avx2", "fma", "bmi1", "bmi2", "movbe"}  # x86-64-v3: the portable level itself
_LOADED_BEFORE = ("torch", "numpy", "cv2")  # libraries that have read their variables once loaded


def check_mode(mode: object) -> str:
    """``mode`` if it is ``portable`` or ``native``; otherwise an error that lists both."""
    if mode not in MODES:
        raise AlposeError(
            f"numerics={mode!r} is not known; use numerics=portable or numerics=native"
        )
    return str(mode)


def requested(argv: Sequence[str]) -> str:
    """The mode a command line asks for: a Hydra override ``numerics=...`` (last one wins), else
    ``$ALPOSE_NUMERICS``, else portable."""
    mode = os.environ.get(MODE_ENV) or DEFAULT
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "numerics" and value:
            mode = value
    return mode


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def portable_env(flags: set[str] | None = None) -> dict[str, str]:
    """The variables of portable numerics on a CPU with ``flags`` (default: this one): the AVX2
    limits, plus NumPy's and OpenCV's AVX-512 switches where the CPU has AVX-512; nothing on a CPU
    below x86-64-v3 (its results are its own whatever is set)."""
    flags = cpu_flags() if flags is None else flags
    if not flags >= V3_FLAGS:
        return {}
    return {**LIMITS, **(AVX512_OFF if "avx512f" in flags else {})}


def active() -> str:
    """The mode this process's environment holds: portable when every limit is set at its level."""
    env = os.environ
    return "portable" if all(env.get(k) == v for k, v in portable_env().items()) else "native"


def apply(mode: str) -> str:
    """Set the limits for ``mode`` in this process's environment (inherited by its workers) and
    return the mode in force. Once torch, NumPy or OpenCV is loaded the limits can no longer
    change: a request that differs from what is in force then warns and keeps it."""
    mode = check_mode(mode)
    loaded = [name for name in _LOADED_BEFORE if name in sys.modules]
    if mode == active() or not loaded:
        if mode == "portable":
            os.environ.update(portable_env())
        elif os.environ.get(MODE_ENV) == "portable":  # limits this project set, not the user's
            for key, value in portable_env().items():
                if os.environ.get(key) == value:
                    del os.environ[key]
        os.environ[MODE_ENV] = mode
        return mode
    now = active()
    print(
        f"warning: numerics={mode} was asked for after {', '.join(loaded)} loaded; this process "
        f"keeps numerics={now} (set ALPOSE_NUMERICS={mode} before starting Python)",
        file=sys.stderr,
    )
    os.environ[MODE_ENV] = now
    return now


def cpu_threads(mode: str, requested: int | None, default: int) -> int:
    """Torch threads of a CPU process: ``requested`` when given, else one under portable numerics
    (sums split across threads change with the count), else ``default``."""
    if requested:
        return int(requested)
    return PORTABLE_THREADS if mode == "portable" else max(1, int(default))
