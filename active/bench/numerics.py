"""``alpose bench numerics``: what portable CPU numerics cost, as training and inference images/s
of the small and the paper model under ``portable`` against ``native`` on this CPU.

The kernel limits are read when torch loads, so every (mode, round) is timed in a process of its
own (``python -m active.bench.numerics --child``), and the modes alternate over the rounds so that
the machine's drift hits both alike; the figure is the best round of each. Both modes run with the
same thread count: the ratio is the kernels' cost alone. (Portable runs default to one thread per
process besides; with ``jobs=N`` a machine's cores are still all used.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from active.bench.speed import MODELS as PX
from active.bench.speed import bench_inference, bench_train, default_sizes, synthetic_pool
from active.bench.text_table import aligned
from hourglass import numerics
from hourglass.errors import AlposeError
from hourglass.io import write_json

MODELS = "hourglass_small,hourglass_paper"


@dataclass
class NumericsRow:
    """One (what, model): images/s under each mode and their ratio (portable / native)."""

    what: str  # train | inference
    model: str
    px: int
    threads: int
    native_kernels: str  # torch's CPU capability in that process, e.g. AVX512
    portable_kernels: str
    native_images_per_s: float
    portable_images_per_s: float
    ratio: float
    rounds: int


def _child(models: list[str], threads: int, quick: bool) -> list[dict]:
    """Time training and inference of each model in this process; rows as plain dicts."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    rows = []
    for name in models:
        px = PX.get(name, (256, "paper"))[0]
        sizes = default_sizes(px, "cpu", quick)
        data = synthetic_pool(px, max(sizes.train_batch, sizes.infer_images))
        for row in (
            bench_train(name, data, device, sizes, "sample"),
            bench_inference(name, data, device, sizes),
        ):
            rows.append({**asdict(row), "kernels": torch.backends.cpu.get_cpu_capability()})
    return rows


def _env(mode: str) -> dict[str, str]:
    """This process's environment with the limits of ``mode`` alone (the user's own removed)."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.portable_env()}
    env[numerics.MODE_ENV] = mode
    return {**env, **(numerics.portable_env() if mode == "portable" else {})}


def _time_in_child(mode: str, models: list[str], threads: int, quick: bool) -> list[dict]:
    cmd = [sys.executable, "-m", "active.bench.numerics", "--child", "--models", ",".join(models)]
    cmd += ["--threads", str(threads)] + (["--quick"] if quick else [])
    done = subprocess.run(cmd, env=_env(mode), capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise AlposeError(f"the {mode} timing process failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    models: list[str], threads: int, rounds: int, quick: bool, log=print
) -> list[NumericsRow]:
    """Alternate native and portable processes for ``rounds`` rounds; best images/s of each."""
    best: dict[tuple[str, str, str], dict] = {}
    for r in range(rounds):
        for mode in ("native", "portable") if r % 2 == 0 else ("portable", "native"):
            log(f"  round {r + 1}/{rounds}: {mode}")
            for row in _time_in_child(mode, models, threads, quick):
                key = (mode, row["what"], row["model"])
                if key not in best or row["images_per_s"] > best[key]["images_per_s"]:
                    best[key] = row
    out = []
    for (mode, what, model), nat in best.items():
        if mode != "native":
            continue
        port = best[("portable", what, model)]
        out.append(
            NumericsRow(
                what=what,
                model=model,
                px=nat["px"],
                threads=threads,
                native_kernels=nat["kernels"],
                portable_kernels=port["kernels"],
                native_images_per_s=nat["images_per_s"],
                portable_images_per_s=port["images_per_s"],
                ratio=round(port["images_per_s"] / max(nat["images_per_s"], 1e-12), 3),
                rounds=rounds,
            )
        )
    return out


def format_rows(rows: list[NumericsRow]) -> str:
    head = ["what", "model", "px", "threads", "native img/s", "portable img/s", "portable/native"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r.what,
                r.model,
                str(r.px),
                str(r.threads),
                f"{r.native_images_per_s:,.1f} ({r.native_kernels})",
                f"{r.portable_images_per_s:,.1f} ({r.portable_kernels})",
                f"{r.ratio:.2f}",
            ]
        )
    return aligned(lines)


def run_numerics(args: argparse.Namespace) -> int:
    """``alpose bench numerics``."""
    if args.rounds < 1:
        raise AlposeError("--rounds must be at least 1")
    threads = args.threads or len(os.sched_getaffinity(0))
    models = [m for m in args.models.split(",") if m]
    print(
        f"alpose bench numerics: {', '.join(models)} on the CPU, {threads} thread(s) in both modes"
    )
    rows = measure(models, threads, args.rounds, args.quick)
    print(format_rows(rows))
    print(
        "img/s: best of the rounds, each mode in its own process (the kernels in brackets); "
        "portable runs use one thread per process unless `threads=` says otherwise"
    )
    if args.json:
        write_json(Path(args.json), {"bench": "numerics", "rows": [asdict(r) for r in rows]})
    return 0


def _child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m active.bench.numerics --child")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    rows = _child(args.models.split(","), args.threads, args.quick)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child_main(sys.argv[2:]))
