"""The tiny synthetic set the unit tests train on, and the overrides that point a command at it."""

from __future__ import annotations

from pathlib import Path

TINY_SYNTHETIC = {
    "name": "synthetic",
    "size": 64,
    "seed": 7,
    "splits": {"train": 600, "val": 150, "test": 100},
    "generator": {},
}


def tiny_overrides(data_dir: Path, runs: Path) -> list[str]:
    """Hydra overrides that point ``alpose train`` at the tiny synthetic cache."""
    s = TINY_SYNTHETIC["splits"]
    return [
        f"paths.data={data_dir}",
        f"paths.runs={runs}",
        f"dataset.seed={TINY_SYNTHETIC['seed']}",
        f"dataset.splits.train={s['train']}",
        f"dataset.splits.val={s['val']}",
        f"dataset.splits.test={s['test']}",
        "progress=false",
    ]
