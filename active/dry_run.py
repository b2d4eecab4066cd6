"""``alpose run --dry-run``: the resolved config, which cells would run or be skipped, and the cost.

Nothing is trained, rendered or written. Cells come from each ``state.json`` under the result
folder. The training cost is (labelled persons x training fraction x epochs) summed over the cycles
still to run, divided by a training speed in images/s: from ``alpose bench``'s JSON (``bench=PATH``,
else ``<runs>/bench.json``) when there is one, else from this run's own ``metrics.csv`` timing
columns; acquisition time is added per acquirer where finished cycles measured it.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from active.layout import INITIAL, budget_schedule, seed_dir

# Keys a bench JSON may give training speed under (images per second), most specific first.
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
    """Training images per second and, per acquirer, mean seconds of one acquisition."""

    images_per_s: float
    source: str
    acquire_s: dict[str, float]


def plan_cells(root: Path, names: list[str], seeds: list[int], cycles: int) -> list[CellPlan]:
    """Done and missing cycles of every cell (and of each seed's cycle 0) from ``state.json``."""
    from active.experiment import load_state

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
    """A training speed in a bench JSON: the first of RATE_KEYS, preferring a row of ``model``."""
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


def bench_speed(path: Path, model: str | None) -> Speed | None:
    """Training speed from an ``alpose bench`` JSON file, or None when it has none."""
    if not path.is_file():
        return None
    try:
        rate = find_rate(json.loads(path.read_text()), model)
    except (OSError, ValueError):
        return None
    return Speed(rate, f"alpose bench results {path}", {}) if rate else None


def train_fraction(cfg: DictConfig) -> float:
    """Share of the labelled set that is trained on (the rest is the held-out selection slice)."""
    protocol = cfg.get("protocol") or {}
    if protocol.get("selection", "holdout") == "holdout":
        return 1.0 - float(protocol.get("holdout_fraction", 0.0))
    return 1.0


def measured_speed(root: Path, fraction: float) -> Speed | None:
    """Speed from this run's finished cycles (train_seconds, acquisition_seconds), or None."""
    from active.experiment import read_rows

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
    return Speed(images / seconds, f"this run's metrics.csv timing ({root})", means)


def estimate_seconds(
    cells: list[CellPlan],
    budgets: list[int],
    epochs: tuple[int, int],
    fraction: float,
    speed: Speed,
) -> tuple[float, float, float]:
    """(image-epochs to train, training seconds, acquisition seconds) of the cycles still to run."""
    work = 0.0
    acquire = 0.0
    for cell in cells:
        for cycle in cell.todo:
            if cycle == 0 and cell.acquirer != INITIAL:
                continue  # the shared cycle 0 is counted once, under _initial
            work += budgets[cycle] * fraction * (epochs[0] if cycle == 0 else epochs[1])
        if cell.acquirer != INITIAL:
            picks = [c for c in cell.todo if c + 1 < len(budgets)]  # cycles followed by a selection
            acquire += len(picks) * speed.acquire_s.get(cell.acquirer, 0.0)
    return work, work / speed.images_per_s, acquire


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
    model = cfg.model.get("name") if cfg.get("model") else None
    bench = Path(str(cfg.get("bench") or Path(str(cfg.paths.runs)) / "bench.json"))
    speed = bench_speed(bench, model) or measured_speed(root, fraction)
    if speed is None:
        lines.append("no estimate: run alpose bench (or finish a cycle of this run)")
        return "\n".join(lines) + "\n"
    epochs = (int(cfg.epochs_first), int(cfg.epochs_later))
    work, train_s, acquire_s = estimate_seconds(cells, budgets, epochs, fraction, speed)
    lines.append(
        f"training: {work:,.0f} image-epochs at {speed.images_per_s:,.1f} images/s "
        f"(from {speed.source}) = about {_duration(train_s)}"
    )
    if speed.acquire_s:
        lines.append(f"acquisition (measured per acquirer): about {_duration(acquire_s)}")
    else:
        lines.append("acquisition: not estimated (no finished cycle measured it)")
    total = train_s + acquire_s
    if math.isfinite(total):
        lines.append(f"total: about {_duration(total)} on one job (evaluation not counted)")
    return "\n".join(lines) + "\n"
