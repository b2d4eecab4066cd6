"""A run's numbers in a form that can be compared exactly: per (acquirer, seed, cycle) cell its
PCKh, the images it picked and a hash of its trained weights.

Two runs of one config and seed under portable numerics (``hourglass/numerics.py``) must give
equal fingerprints on any x86-64 CPU; :func:`first_difference` names the first cell where they
do not. The golden file of the smoke experiment (``tests/golden/``) is one such fingerprint.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch

from active.loop.run_files import INITIAL
from hourglass.errors import AlposeError
from hourglass.io import atomic_path

# metrics.csv columns that are numbers of the model (not timings), compared exactly
NUMBER_COLUMNS = ("labelled", "pckh_standard", "pckh_paper", "best_epoch")


def weights_hash(path: Path) -> str:
    """SHA-256 (first 16 hex digits) of a checkpoint's tensors in key order, so that the zip
    container's own bytes (names, alignment) do not count."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            digest.update(key.encode())
            digest.update(
                value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
    return digest.hexdigest()[:16]


def _selection_hash(path: Path) -> str:
    """SHA-256 (first 16 hex digits) of a selection file's array (picked indices and scores);
    empty for a cell that picked nothing (cycle 0)."""
    if not path.is_file():
        return ""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise AlposeError(
            f"cannot read {path} ({type(err).__name__}); rerun `alpose run` with the same "
            "command to redo that cycle"
        ) from None
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def fingerprint(root: Path) -> list[dict[str, str]]:
    """One row per finished cell of the result folder ``root``, in (acquirer, seed, cycle) order:
    the model's numbers as written in ``metrics.csv``, the selection's and weights' hashes."""
    rows: list[dict[str, str]] = []
    for metrics in sorted(root.glob("*/seed_*/metrics.csv")):
        cell = metrics.parent
        acquirer, seed = cell.parent.name, cell.name.removeprefix("seed_")
        with open(metrics, newline="") as f:
            for record in csv.DictReader(f):
                cycle = record["cycle"]
                ckpt = cell / "checkpoints" / f"cycle_{cycle}.pt"
                rows.append(
                    {
                        "acquirer": acquirer,
                        "seed": seed,
                        "cycle": cycle,
                        **{k: record[k] for k in NUMBER_COLUMNS},
                        "selection": _selection_hash(cell / "selections" / f"cycle_{cycle}.npy"),
                        "weights": weights_hash(ckpt) if ckpt.is_file() else "",
                    }
                )
    rows.sort(
        key=lambda r: (r["acquirer"] != INITIAL, r["acquirer"], int(r["seed"]), int(r["cycle"]))
    )
    return rows


def first_difference(
    expected: list[dict[str, str]], got: list[dict[str, str]], label: str = "golden"
) -> str | None:
    """None when equal; else one line naming the first cell (and field) that differs, with the
    expected value marked ``label``."""
    for want, have in zip(expected, got, strict=False):
        cell = f"{want['acquirer']} seed {want['seed']} cycle {want['cycle']}"
        if (want["acquirer"], want["seed"], want["cycle"]) != (
            have["acquirer"],
            have["seed"],
            have["cycle"],
        ):
            return f"cell {cell} expected, found {have['acquirer']} seed {have['seed']} cycle {have['cycle']}"
        for key in want:
            if want[key] != have.get(key):
                return f"cell {cell}: {key} {have.get(key)} ({label}: {want[key]})"
    if len(expected) != len(got):
        return f"{len(got)} cells, the {label} file has {len(expected)}"
    return None


def write_csv(rows: list[dict[str, str]], path: Path) -> None:
    """Write a fingerprint as CSV (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["acquirer"])
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
