"""An experiment's files: where they live, the columns of ``metrics.csv``, each cell's
``state.json``, rows and checkpoint checks (every write atomic).

Paths are a fixed function of (experiment, acquirer, seed), never timestamps, so parallel jobs
never collide and a second run of the same command resumes instead of starting over::

    <runs>/<experiment>/config.yaml                      the experiment's resolved config
    <runs>/<experiment>/<acquirer>/seed_<s>/metrics.csv  one row per finished cycle
                                          /state.json    resume point (last finished cycle, labelled set)
                                          /selections/cycle_<c>.npy   picked indices and their scores
                                          /checkpoints/cycle_<c>.pt   weights-only state dicts
    <runs>/<experiment>/_initial/seed_<s>/               cycle 0 (the initial set), shared by every acquirer
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hourglass.errors import AlposeError
from hourglass.io import atomic_path, kill_point, sha256_file
from hourglass.joints import MPII_JOINTS

INITIAL = "_initial"  # pseudo-acquirer folder holding each seed's shared first cycle

# metrics.csv: the fixed leading columns, then per-joint PCKh in both conventions.
METRIC_COLUMNS: tuple[str, ...] = (
    "cycle",  # 0 = trained on the initial set
    "labelled",  # persons labelled when this cycle's model was trained (the budget)
    "pckh_standard",  # standard PCKh@0.5 Mean (14 joints, MPII) / PCK@0.2 Total (LSP), percent
    "pckh_paper",  # the anchor's lenient PCKh Mean (16 joints), percent
    "epochs",
    "best_epoch",
    "train_seconds",
    "acquisition_seconds",  # time to pick the images that joined the labelled set for this cycle
)


def joint_columns(joint_names: tuple[str, ...] = MPII_JOINTS) -> list[str]:
    """Per-joint columns: ``standard_<joint>`` then ``paper_<joint>``."""
    return [f"standard_{j}" for j in joint_names] + [f"paper_{j}" for j in joint_names]


def experiment_dir(runs: str | Path, experiment: str) -> Path:
    return Path(runs) / experiment


def seed_dir(runs: str | Path, experiment: str, acquirer: str, seed: int) -> Path:
    return experiment_dir(runs, experiment) / acquirer / f"seed_{seed}"


def budget_schedule(
    budgets: list[int] | None, initial: int | None, per_cycle: int | None, cycles: int | None
) -> list[int] | None:
    """Labelled persons per cycle: ``budgets`` when listed, else ``initial + i * per_cycle`` for
    i = 0..``cycles`` (configs/run.yaml); None when the config says neither."""
    if budgets:
        return [int(b) for b in budgets]
    if all(isinstance(v, int) for v in (initial, per_cycle, cycles)):
        return [initial + i * per_cycle for i in range(cycles + 1)]
    return None


@dataclass
class CellState:
    """Resume point of one (acquirer, seed) cell, stored as ``state.json``."""

    cycle: int = -1  # last finished cycle
    labelled: list[int] = field(default_factory=list)  # labelled set for the NEXT cycle
    acquisition_seconds: float = 0.0  # time of the selection that built ``labelled``
    checkpoints: dict[str, str] = field(default_factory=dict)  # "checkpoints/cycle_c.pt" -> sha256


def load_state(folder: Path) -> CellState:
    """The cell's resume point (a fresh state when none was written yet)."""
    path = folder / "state.json"
    if not path.is_file():
        return CellState()
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(CellState)}
        return CellState(**{k: v for k, v in raw.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise AlposeError(
            f"cannot read {path} ({type(err).__name__}: {err}); move the folder {folder} "
            "aside and rerun to redo that cell"
        ) from None


def save_state(folder: Path, state: CellState) -> None:
    """Write ``state.json`` atomically: a reader sees the old state or the new one, never a mix."""
    with atomic_path(folder / "state.json") as tmp:
        tmp.write_text(json.dumps(vars(state), indent=2) + "\n")
        kill_point("state")  # test-only fault injection (hourglass/io.py): the new state is unseen


def checkpoint_cycle(name: str) -> int:
    """The cycle of a checkpoint name such as ``checkpoints/cycle_3.pt``."""
    match = re.search(r"cycle_(\d+)\.pt$", name)
    if match is None:
        raise AlposeError(f"unexpected checkpoint name {name!r} in state.json")
    return int(match.group(1))


def first_bad_checkpoint(folder: Path, state: CellState) -> str | None:
    """The earliest recorded checkpoint that is missing or whose sha256 differs, else None."""
    for name in sorted(state.checkpoints, key=checkpoint_cycle):
        path = folder / name
        if not path.is_file() or sha256_file(path) != state.checkpoints[name]:
            return name
    return None


def warn_retraining(path: Path, cycle: int) -> None:
    print(
        f"warning: {path} is missing or corrupt (its sha256 differs from state.json); "
        f"retraining from cycle {cycle}",
        file=sys.stderr,
        flush=True,
    )


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed atomic write left in a cell folder (``.name.*.tmp``)."""
    for sub in (folder, folder / "checkpoints", folder / "selections"):
        if sub.is_dir():
            for tmp in sub.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def read_picks(folder: Path, cycle: int) -> np.ndarray:
    path = folder / "selections" / f"cycle_{cycle}.npy"
    try:
        return np.asarray(np.load(path)["index"], np.int64)
    except (OSError, ValueError, KeyError) as err:
        raise AlposeError(
            f"cannot rebuild the labelled set from {path} ({err}); move the folder {folder} "
            "aside and rerun to redo that cell"
        ) from None


def write_rows(path: Path, rows: list[dict], joint_names: tuple[str, ...]) -> None:
    """Write ``metrics.csv`` atomically (the fixed columns, then per-joint ones)."""
    columns = [*METRIC_COLUMNS, *joint_columns(joint_names)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in columns})


def _fmt(value: Any) -> Any:
    return repr(float(value)) if isinstance(value, float | np.floating) else value


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
