"""``alpose run --dry-run``: the resolved config, which cells would run or be skipped, and the cost.

Nothing is trained, rendered or written. Cells come from each ``state.json`` under the result
folder. The training cost is (labelled persons x training fraction x epochs) summed over the cycles
still to run, divided by a training speed in images/s: from ``alpose bench``'s JSON (``bench=PATH``,
else ``<runs>/bench.json``) when there is one (on a real dataset no faster than the bench's
host-side data path, ``host_bound``), else from this run's own ``metrics.csv`` timing columns;
acquisition time is added per acquirer where finished cycles measured it.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from active.loop import workload
from active.loop.run_files import INITIAL, budget_schedule, load_state, read_rows, seed_dir
from active.loop.workload import (
    FEEDER_WORKERS,
    acquirer_subsample,
    cycle_work,
    scored_images,
    train_rate,
)
from hourglass.errors import AlposeError

# Generic bench JSON: training speed under one of these keys (images per second), most specific
# first. `alpose bench --json` itself writes rows {what, model, device, path, images_per_s}.
RATE_KEYS = (
    "train_images_per_second",
    "train_images_per_s",
    "images_per_second",
    "images_per_s",
)


@dataclass
class CellPlan:
    """One (acquirer, seed) cell, or a seed's shared cycle 0 (acquirer ``_initial``)."""

    acquirer: str
    seed: int
    done: list[int]
    todo: list[int]


@dataclass
class Speed:
    """Measured speeds: training (and, from a bench, inference) images/s; acquisition as scored
    images/s per acquirer (bench) or seconds per cycle (this run's metrics.csv)."""

    train: float
    source: str
    infer: float | None = None
    acquire_rate: dict[str, float] = field(default_factory=dict)
    acquire_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Sizes:
    """Persons in the pool, the report split and the best-epoch selection split."""

    pool: int
    report: int
    select: int


def plan_cells(root: Path, names: list[str], seeds: list[int], cycles: int) -> list[CellPlan]:
    """Done and missing cycles of every cell (and of each seed's cycle 0) from ``state.json``."""
    out = []
    for seed in seeds:
        last = load_state(seed_dir(root.parent, root.name, INITIAL, seed)).cycle
        out.append(CellPlan(INITIAL, seed, [0] if last >= 0 else [], [] if last >= 0 else [0]))
        for name in names:
            last = load_state(seed_dir(root.parent, root.name, name, seed)).cycle
            out.append(CellPlan(name, seed, list(range(last + 1)), list(range(last + 1, cycles))))
    return out


def _span(cycles: list[int]) -> str:
    if not cycles:
        return "-"
    return str(cycles[0]) if len(cycles) == 1 else f"{cycles[0]}-{cycles[-1]}"


def find_rate(node: Any, model: str | None) -> float | None:
    """A training speed in a generic bench JSON: the first of RATE_KEYS, preferring ``model``'s."""
    found: list[tuple[bool, int, float]] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for rank, key in enumerate(RATE_KEYS):
                value = item.get(key)
                if isinstance(value, int | float) and value > 0:
                    found.append((item.get("model") == model, rank, float(value)))
                    break
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(node)
    if not found:
        return None
    found.sort(key=lambda f: (not f[0], f[1]))
    return found[0][2]


def _rows_speed(rows: list[dict], model: str, device: str, path: str, source: str) -> Speed | None:
    """Speeds of ``model`` on ``device`` from ``alpose bench`` rows (training path ``path`` first)."""
    mine = [r for r in rows if r.get("model") == model and r.get("device") == device]
    train = [r for r in mine if r.get("what") == "train"]
    train.sort(key=lambda r: r.get("path") != path)
    if not train or not train[0].get("images_per_s"):
        return None
    infer = [r["images_per_s"] for r in mine if r.get("what") == "inference"]
    acquire = {
        str(r["what"]).split(" ", 1)[1]: float(r["images_per_s"])
        for r in mine
        if str(r.get("what", "")).startswith("acquire ") and r.get("images_per_s")
    }
    where = f"{source}, {model} on {device}, {train[0].get('path', '-')} path"
    return Speed(float(train[0]["images_per_s"]), where, infer[0] if infer else None, acquire)


def run_device(cfg: DictConfig) -> str:
    """``cpu`` or ``cuda``: where the run would train."""
    device = str(cfg.get("device", "auto"))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def bench_speed(path: Path, cfg: DictConfig) -> Speed | None:
    """Speeds from an ``alpose bench --json`` file (its rows for this model and device), or a
    training speed under a generic key; None when the file is absent or says nothing usable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    model = str(cfg.model.get("name")) if cfg.get("model") else None
    rows = data.get("rows") if isinstance(data, dict) else None
    if isinstance(rows, list) and any(isinstance(r, dict) and "what" in r for r in rows):
        device = run_device(cfg)

        source = f"alpose bench results {path}"
        speed = _rows_speed(rows, model, device, workload.train_path(cfg, device), source)
        return None if speed is None else host_bound(speed, rows, cfg, FEEDER_WORKERS)
    rate = find_rate(data, model)
    return Speed(rate, f"alpose bench results {path}") if rate else None


def host_bound(speed: Speed, rows: list[dict], cfg: DictConfig, threads: int) -> Speed:
    """``speed`` with training no faster than the host side of its steps on a real dataset (the
    bench's ``host step`` rows; ``workload.train_rate``), as ``alpose bench experiment=`` does."""
    try:
        sizes, _ = workload.split_sizes(cfg)
    except AlposeError:
        return speed
    host = workload.host_side(cfg, [r for r in rows if isinstance(r, dict)], sizes)
    if host is None:
        return speed
    rate = train_rate(speed.train, host[0], threads)
    if rate < speed.train:
        speed.source += (
            f"; bounded by the host data path: {host[0]:,.0f} images/s per core x {threads} "
            f"feeder thread(s), {host[1]} reads ({host[2]})"
        )
        speed.train = rate
    return speed


def split_sizes(cfg: DictConfig) -> Sizes | None:
    """Pool, report and selection sizes (``alpose bench``'s rule: config, cache or assumed)."""
    try:
        sizes, _ = workload.split_sizes(cfg)
    except AlposeError:
        return None
    p = cfg.protocol
    select = 0 if p.selection == "holdout" else sizes.get(str(p.selection), 0)
    return Sizes(sizes.get("train", 0), sizes.get(str(p.report_split), 0), select)


def train_fraction(cfg: DictConfig) -> float:
    """Share of the labelled set that is trained on (the rest is the held-out selection slice)."""
    protocol = cfg.get("protocol") or {}
    if protocol.get("selection", "holdout") == "holdout":
        return 1.0 - float(protocol.get("holdout_fraction", 0.0))
    return 1.0


def measured_speed(root: Path, fraction: float) -> Speed | None:
    """Speed from this run's finished cycles (train_seconds, acquisition_seconds), or None."""
    images = seconds = 0.0
    acquire: dict[str, list[float]] = {}
    for path in sorted(root.glob("*/seed_*/metrics.csv")):
        name = path.parent.parent.name
        for row in read_rows(path):
            try:
                cycle, labelled = int(row["cycle"]), float(row["labelled"])
                epochs, train_s = float(row["epochs"]), float(row["train_seconds"])
            except (KeyError, ValueError):
                continue
            # a cell's cycle 0 is a copy of _initial's: counted once
            if (name == INITIAL or cycle >= 1) and train_s > 0:
                images += labelled * fraction * epochs
                seconds += train_s
            if name != INITIAL and cycle >= 1:
                with contextlib.suppress(KeyError, ValueError):
                    acquire.setdefault(name, []).append(float(row["acquisition_seconds"]))
    if seconds <= 0:
        return None
    means = {k: sum(v) / len(v) for k, v in acquire.items() if v}
    source = f"this run's metrics.csv timing ({root}; training time includes per-epoch selection)"
    return Speed(images / seconds, source, acquire_s=means)


@dataclass
class Estimate:
    """Work left and its seconds; None where no speed was measured."""

    train_images: float
    train_s: float
    infer_images: float
    infer_s: float | None
    acquire_s: float
    acquire_missing: list[str]


def estimate(
    cells: list[CellPlan],
    budgets: list[int],
    epochs: tuple[int, int],
    fraction: float,
    speed: Speed,
    sizes: Sizes | None,
    subsample: Callable[[str], int | None] = lambda name: None,
) -> Estimate:
    """Training, evaluation and acquisition left in the cycles still to run (``subsample``: the
    pool subsample each acquirer scores, :func:`active.workload.acquirer_subsample`)."""
    train = infer = acquire = 0.0
    missing: set[str] = set()
    for cell in cells:
        for cycle in cell.todo:
            if cycle >= 1 or cell.acquirer == INITIAL:  # the shared cycle 0 trains under _initial
                n_epochs = epochs[0] if cycle == 0 else epochs[1]
                select, report = (sizes.select, sizes.report) if sizes is not None else (0, 0)
                t, i = cycle_work(budgets[cycle], n_epochs, fraction, select, report)
                train += t
                if sizes is not None:
                    infer += i
            if cell.acquirer == INITIAL or cycle + 1 >= len(budgets):
                continue  # no selection after this cycle
            name = cell.acquirer
            if name in speed.acquire_rate and sizes is not None:
                scored = scored_images(sizes.pool, budgets[cycle], subsample(name))
                acquire += scored / speed.acquire_rate[name]
            elif name in speed.acquire_s:
                acquire += speed.acquire_s[name]
            else:
                missing.add(name)
    infer_s = infer / speed.infer if speed.infer and sizes is not None else None
    return Estimate(train, train / speed.train, infer, infer_s, acquire, sorted(missing))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render(cfg: DictConfig, root: Path, names: list[str], seeds: list[int]) -> str:
    """The whole dry-run report as text."""
    lines = ["alpose run --dry-run: nothing is trained or written", "", "--- resolved config ---"]
    lines.append(OmegaConf.to_yaml(cfg, resolve=True).rstrip())
    budgets = budget_schedule(cfg.budgets, cfg.initial, cfg.per_cycle, cfg.cycles) or []
    cells = plan_cells(root, names, seeds, len(budgets))
    lines += [
        "",
        f"--- cells: experiment '{cfg.name}', budgets {budgets}, results in {root} ---",
    ]
    width = max(len("acquirer"), *(len(c.acquirer) for c in cells))
    lines.append(f"  {'acquirer':<{width}}  {'seed':>4}  {'done':<7}  would")
    for c in cells:
        what = f"run cycles {_span(c.todo)}" if c.todo else "skip (done)"
        if c.acquirer == INITIAL and c.todo:
            what = "run cycle 0 (shared by the seed's acquirers)"
        lines.append(f"  {c.acquirer:<{width}}  {c.seed:>4}  {_span(c.done):<7}  {what}")
    runnable = [c for c in cells if c.acquirer != INITIAL]
    n_run = sum(1 for c in runnable if c.todo)
    lines.append(f"{n_run} cell(s) to run, {len(runnable) - n_run} done (skipped)")

    lines += ["", "--- cost estimate ---"]
    fraction = train_fraction(cfg)
    bench = Path(str(cfg.get("bench") or Path(str(cfg.paths.runs)) / "bench.json"))
    speed = bench_speed(bench, cfg) or measured_speed(root, fraction)
    if speed is None:
        lines.append("no estimate: run alpose bench (or finish a cycle of this run)")
        return "\n".join(lines) + "\n"
    epochs = (int(cfg.epochs_first), int(cfg.epochs_later))
    est = estimate(
        cells,
        budgets,
        epochs,
        fraction,
        speed,
        split_sizes(cfg),
        lambda name: acquirer_subsample(cfg, name),
    )
    lines.append(
        f"training: {est.train_images:,.0f} image-epochs at {speed.train:,.1f} images/s "
        f"(from {speed.source}) = about {_duration(est.train_s)}"
    )
    if est.infer_s is not None:
        lines.append(
            f"evaluation: {est.infer_images:,.0f} images at {speed.infer:,.1f} images/s "
            f"= about {_duration(est.infer_s)}"
        )
    if est.acquire_missing:
        lines.append(f"acquisition: not measured for {', '.join(est.acquire_missing)}")
    lines.append(f"acquisition: about {_duration(est.acquire_s)} (measured acquirers)")
    total = est.train_s + (est.infer_s or 0.0) + est.acquire_s
    if math.isfinite(total):
        lines.append(f"total: about {_duration(total)} in one job (process start-up not counted)")
    return "\n".join(lines) + "\n"
