"""What computed a result: Python, torch, every installed package, the CPU, the numerics mode,
threads and device, as one plain mapping stored beside the run's config.

A result is reproducible only under the same environment (``hourglass/numerics.py`` says why the
CPU matters); :func:`changes` names what differs when a run is resumed somewhere else.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from hourglass.numerics import V3_FLAGS, cpu_flags

# x86-64 micro-architecture levels by the CPU flags they need (the psABI's levels 2 to 4).
_LEVELS = (
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    ("x86-64-v3", V3_FLAGS),
    ("x86-64-v2", {"sse4_2", "popcnt", "ssse3"}),
)
SUMMARY_KEYS = ("python", "torch", "cuda", "cpu", "cpu_level", "cpu_capability", "numerics")
SUMMARY_KEYS += ("threads", "device")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. ``AMD EPYC`` (``platform.processor()`` where /proc has none)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_level() -> str:
    """The highest x86-64 level the CPU supports (``x86-64-v3`` = AVX2), or the machine name."""
    flags = cpu_flags()
    for name, needed in _LEVELS:
        if needed <= flags:
            return name
    return platform.machine()


def _commit() -> str | None:
    """The checkout's git commit with ``+dirty`` for uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def packages() -> dict[str, str]:
    """Every installed distribution -> its version, sorted by name (this project left out)."""
    found = {
        (dist.metadata["Name"] or "").lower(): dist.version for dist in metadata.distributions()
    }
    found.pop("alpose", None)
    found.pop("", None)
    return dict(sorted(found.items()))


def describe(numerics: str, threads: int, device: str) -> dict:
    """The environment of this process as plain data (YAML-ready).

    ``device`` is the one the run computes on (``cpu``, ``cuda:0``); a GPU is named by its model.
    """
    import torch  # heavy: `alpose status` reads stored environments without loading torch

    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cpu": cpu_model(),
        "cpu_level": cpu_level(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numerics": numerics,
        "threads": int(threads),
        "device": device,
        "platform": platform.platform(),
        "commit": _commit(),
        "packages": packages(),
    }


def changes(old: dict, new: dict) -> list[str]:
    """What differs between two environments that can change the numbers, as ``key a -> b``
    phrases (the commit and platform string are left out: the config check covers the code)."""
    out = [
        f"{key} {old.get(key)} -> {new.get(key)}"
        for key in SUMMARY_KEYS
        if old.get(key) != new.get(key)
    ]
    a, b = old.get("packages") or {}, new.get("packages") or {}
    for name in sorted(a.keys() | b.keys()):
        if name != "torch" and a.get(name) != b.get(name):
            out.append(f"{name} {a.get(name, 'absent')} -> {b.get(name, 'absent')}")
    return out


def summary(env: dict) -> str:
    """One line: ``Python 3.11.7, torch 2.13.0, numerics portable (AVX2, 1 thread), CPU ...``."""
    threads = env.get("threads")
    return (
        f"Python {env.get('python')}, torch {env.get('torch')}, numerics {env.get('numerics')} "
        f"({env.get('cpu_capability')} kernels, {threads} thread{'s' if threads != 1 else ''}), "
        f"CPU {env.get('cpu')} ({env.get('cpu_level')}), device {env.get('device')}"
    )
