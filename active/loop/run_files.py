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
import hashlib
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
TIMING_COLUMNS = ("train_seconds", "acquisition_seconds")  # wall time: differs between reruns


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
    """Resume point of one (acquirer, seed) cell, stored as ``state.json``. Every file the cell
    wrote is recorded, so a resume can tell a damaged one from a good one."""

    cycle: int = -1  # last finished cycle
    labelled: list[int] = field(default_factory=list)  # labelled set for the NEXT cycle
    acquisition_seconds: float = 0.0  # time of the selection that built ``labelled``
    checkpoints: dict[str, str] = field(default_factory=dict)  # "checkpoints/cycle_c.pt" -> sha256
    rows: dict[str, str] = field(default_factory=dict)  # "c" -> digest of metrics.csv's row c
    selections: dict[str, str] = field(default_factory=dict)  # "selections/cycle_c.npy" -> sha256
    config: str = ""  # identity of the config that made the cell (active.loop.cell_identity)


# state.json field -> the check of its value (a state with another type is refused)
_FIELD_CHECKS = {
    "cycle": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
    "labelled": lambda v: (
        isinstance(v, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
    ),
    "acquisition_seconds": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "checkpoints": lambda v: _str_map(v),
    "rows": lambda v: _str_map(v),
    "selections": lambda v: _str_map(v),
    "config": lambda v: isinstance(v, str),
}


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def load_state(folder: Path) -> CellState:
    """The cell's resume point (a fresh state when none was written yet); a state.json that is
    not JSON or holds a value of the wrong type is refused, naming the field."""
    path = folder / "state.json"
    if not path.is_file():
        return CellState()
    advice = f"move the folder {folder} aside and rerun to redo that cell"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AlposeError(f"cannot read {path} ({type(err).__name__}: {err}); {advice}") from None
    if not isinstance(raw, dict):
        raise AlposeError(f"{path} does not hold a cell state (a JSON object); {advice}")
    bad = [k for k, check in _FIELD_CHECKS.items() if k in raw and not check(raw[k])]
    if bad:
        raise AlposeError(f"{path} has a value of the wrong type in {', '.join(bad)}; {advice}")
    known = {f.name for f in dataclasses.fields(CellState)}
    return CellState(**{k: v for k, v in raw.items() if k in known})


def save_state(folder: Path, state: CellState) -> None:
    """Write ``state.json`` atomically: a reader sees the old state or the new one, never a mix."""
    with atomic_path(folder / "state.json") as tmp:
        tmp.write_text(json.dumps(vars(state), indent=2) + "\n")
        kill_point("state")  # test-only fault injection (hourglass/io.py): the new state is unseen


def checkpoint_cycle(name: str) -> int:
    """The cycle of a recorded file name: ``checkpoints/cycle_3.pt``, ``selections/cycle_3.npy``."""
    match = re.search(r"cycle_(\d+)\.(?:pt|npy)$", name)
    if match is None:
        raise AlposeError(f"unexpected file name {name!r} in state.json")
    return int(match.group(1))


def warn_retraining(why: str, cycle: int) -> None:
    """One warning line: which file is damaged and the cycle the cell is redone from."""
    print(f"warning: {why}; redoing from cycle {cycle}", file=sys.stderr, flush=True)


def acquisition_seconds(path: Path, cycle: int) -> float:
    """The acquisition time ``metrics.csv`` holds for ``cycle`` (0.0 when its row is unusable)."""
    for row in read_rows(path):
        if well_formed(row) and int(row["cycle"]) == cycle:
            try:
                return float(row.get("acquisition_seconds") or 0.0)
            except ValueError:
                return 0.0
    return 0.0


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


def write_rows(path: Path, rows: list[dict], joint_names: tuple[str, ...]) -> dict[str, str]:
    """Write ``metrics.csv`` atomically (the fixed columns, then per-joint ones); returns each
    row's digest by cycle, for ``state.json``."""
    columns = [*METRIC_COLUMNS, *joint_columns(joint_names)]
    digests = {}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {k: _fmt(row.get(k, "")) for k in columns}
            writer.writerow(cells)
            digests[str(int(row["cycle"]))] = row_digest(columns, [str(cells[k]) for k in columns])
    return digests


def row_digest(columns: list[str], cells: list[str]) -> str:
    """sha256 of one metrics.csv row: its cells' text in column order, timings left out (a rerun
    of a cell writes the same digests, so ``state.json`` is reproducible too)."""
    kept = [f"{c}={v}" for c, v in zip(columns, cells, strict=True) if c not in TIMING_COLUMNS]
    return hashlib.sha256("\x1f".join(kept).encode()).hexdigest()


def well_formed(row: dict[str, str | None]) -> bool:
    """Whether a metrics.csv row has every fixed column, with a number where one belongs."""
    try:
        int(row["cycle"] or "")
        int(row["labelled"] or "")
        float(row["pckh_standard"] or "")
        float(row["pckh_paper"] or "")
    except (KeyError, TypeError, ValueError):
        return False
    return all(row.get(c) is not None for c in METRIC_COLUMNS)


def row_problems(path: Path, state: CellState, last_cycle: int | None = None) -> dict[int, str]:
    """Cycle -> what is wrong with its row in ``metrics.csv`` (missing, malformed, or not the row
    ``state.json`` recorded), for the cycles the state counts as finished (up to ``last_cycle``)."""
    found: dict[int, tuple[dict, list[str]]] = {}
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for cells in reader:
                row = dict(zip(header, cells, strict=False))
                ok = len(cells) == len(header) and well_formed(row)
                cycle = int(row["cycle"]) if ok else None
                if cycle is not None:
                    found[cycle] = (row, cells)
                elif cells and str(cells[0]).isdigit():
                    found.setdefault(int(cells[0]), ({}, []))
    problems = {}
    upto = state.cycle if last_cycle is None else min(state.cycle, last_cycle)
    for cycle in range(upto + 1):
        row, cells = found.get(cycle, (None, None))
        if row is None:
            problems[cycle] = f"{path} has no row for cycle {cycle}"
        elif not cells:
            problems[cycle] = f"{path} has a malformed row for cycle {cycle}"
        elif str(cycle) in state.rows and row_digest(header, cells) != state.rows[str(cycle)]:
            problems[cycle] = (
                f"{path}'s row for cycle {cycle} differs from the one state.json recorded"
            )
    return problems


def selection_problem(folder: Path, cycle: int, state: CellState) -> str | None:
    """What is wrong with ``selections/cycle_<cycle>.npy`` (unreadable, or not the file
    ``state.json`` recorded), else None."""
    name = f"selections/cycle_{cycle}.npy"
    path = folder / name
    recorded = state.selections.get(name)
    if recorded is not None:
        if not path.is_file() or sha256_file(path) != recorded:
            return f"{path} is missing or its sha256 differs from state.json"
        return None
    try:
        picks = np.load(path)
        picks["index"], picks["score"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        return f"{path} cannot be read ({type(err).__name__})"
    return None


def first_damage(folder: Path, state: CellState, last_cycle: int) -> tuple[int, str] | None:
    """The earliest finished cycle whose files do not check out, and why: its checkpoint, its row
    in ``metrics.csv``, or the selection it made for the next cycle (``last_cycle``: the plan's
    last cycle; a state counting cycles beyond it is damaged there)."""
    problems: dict[int, str] = {}
    for name, digest in state.checkpoints.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            problems.setdefault(
                checkpoint_cycle(name), f"{path} is missing or its sha256 differs from state.json"
            )
    for cycle, why in row_problems(folder / "metrics.csv", state, last_cycle).items():
        problems.setdefault(cycle, why)
    for cycle in range(min(state.cycle, last_cycle - 1) + 1):
        why = selection_problem(folder, cycle + 1, state)
        if why is not None:
            problems.setdefault(cycle, why)
    if state.cycle > last_cycle:
        problems.setdefault(
            last_cycle + 1,
            f"{folder / 'state.json'} counts cycles beyond the plan's last ({last_cycle})",
        )
    return min(problems.items()) if problems else None


def _fmt(value: Any) -> Any:
    return repr(float(value)) if isinstance(value, float | np.floating) else value


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
