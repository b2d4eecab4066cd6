"""How much work an experiment's cycles are: images trained, evaluated and scored.

The one count behind ``alpose bench experiment=NAME`` (the whole experiment) and
``alpose run --dry-run`` (the cycles still to run), so the two estimates cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from active.loop.run_files import budget_schedule
from hourglass.datasets.cache import SPLIT_NAMES, memory_choice, open_for_reading
from hourglass.datasets.registry import cache_path
from hourglass.errors import AlposeError

STORE_SIDE = 293  # configs/dataset/mpii.yaml store_size: the stored window side of a real set


def cycle_work(
    budget: int, epochs: int, train_fraction: float, select_size: int, report_size: int
) -> tuple[float, float]:
    """(images trained, images evaluated) by one cycle at ``budget`` labelled persons.

    ``train_fraction`` is the labelled share trained on (the rest is the held-out selection slice
    of ``protocol=standard``); the selection set is evaluated every epoch: that slice, or a fixed
    split of ``select_size`` persons; the report split is evaluated once.
    """
    select = select_size if select_size else budget * (1 - train_fraction)
    return budget * train_fraction * epochs, select * epochs + report_size


def scored_images(pool: int, labelled: int, subsample: int | None) -> int:
    """Pool persons an acquirer scores after a cycle with ``labelled`` of ``pool`` labelled."""
    unlabelled = max(pool - labelled, 0)
    return min(unlabelled, int(subsample)) if subsample else unlabelled


def acquirer_subsample(cfg: Any, name: str) -> int | None:
    """The pool subsample ``name`` scores: ``acquirer_settings.<name>.pool_subsample``, else the
    run's ``pool_subsample`` (as ``experiment.pool_subsample_of`` resolves it on the object)."""
    own = ((cfg.get("acquirer_settings") or {}).get(name) or {}).get("pool_subsample")
    run_wide = cfg.get("pool_subsample")
    value = own or run_wide
    return int(value) if value else None


# The training feeder (hourglass.feeder.Prefetcher) builds batches in one worker thread, so the
# host side of training runs on one core whatever torch's thread count.
FEEDER_WORKERS = 1


def train_rate(
    step_images_per_s: float, host_images_per_s: float | None, threads: int = FEEDER_WORKERS
) -> float:
    """Training images/s when each image also costs host-side data work (cache read, cut plan,
    batch assembly; ``host_images_per_s`` per core, None = none measured): the time per image is
    at least the step's and at least the host's divided by ``threads`` (the two overlap when
    batches are built ahead, so the slower one sets the pace)."""
    if not host_images_per_s or host_images_per_s <= 0:
        return step_images_per_s
    return min(step_images_per_s, host_images_per_s * max(int(threads), 1))


# -- the whole experiment ------------------------------------------------------------------
# Persons per split when an experiment's real cache is not prepared yet (marked "assumed"):
# Newell's MPII split (annot/train.h5, valid.h5) and LSP (1000 train + LSPET 10000, 1000 test).
ASSUMED_SPLITS = {
    "mpii": {"train": 22246, "val": 2958},
    "lsp": {"train": 11000, "test": 1000},
}


def split_sizes(cfg) -> tuple[dict[str, int], str]:
    """Persons per split of an experiment's dataset: config (synthetic), the prepared cache, or
    the assumed published counts; and where they came from."""
    if cfg.dataset.name == "synthetic":
        return {k: int(v) for k, v in cfg.dataset.splits.items()}, "config"
    try:
        path = cache_path(cfg.dataset, cfg.paths.data)
    except Exception:  # noqa: BLE001 - an unprepared or unknown cache: fall back below
        path = None
    if path is not None and Path(path).is_file():
        with open_for_reading(path) as f:
            counts = np.bincount(f["split"][()], minlength=len(SPLIT_NAMES))
        return {n: int(c) for n, c in zip(SPLIT_NAMES, counts, strict=False)}, str(path)
    family = "lsp" if cfg.dataset.name.startswith("lsp") else cfg.dataset.name
    if family in ASSUMED_SPLITS:
        return dict(ASSUMED_SPLITS[family]), "assumed (no cache prepared)"
    raise AlposeError(
        f"no split sizes for dataset {cfg.dataset.name}: prepare it first (`alpose prepare ...`)"
    )


def work_of(cfg, sizes: dict[str, int]) -> dict[str, Any]:
    """Images trained, evaluated and scored by a whole experiment (all seeds and acquirers)."""
    budgets = budget_schedule(cfg.budgets, cfg.initial, cfg.per_cycle, cfg.cycles)
    seeds, acquirers = len(cfg.seeds), list(cfg.acquirers)
    p = cfg.protocol
    holdout = p.selection == "holdout"
    fraction = 1.0 - float(p.holdout_fraction) if holdout else 1.0
    report = sizes.get(str(p.report_split), 0)
    select_split = 0 if holdout else sizes.get(str(p.selection), 0)
    pool = sizes.get("train", 0)

    train0, infer0 = cycle_work(budgets[0], int(cfg.epochs_first), fraction, select_split, report)
    train, infer = seeds * train0, seeds * infer0
    for b in budgets[1:]:
        t, i = cycle_work(b, int(cfg.epochs_later), fraction, select_split, report)
        train += seeds * len(acquirers) * t
        infer += seeds * len(acquirers) * i

    def scored(sub: int | None) -> int:
        return seeds * sum(scored_images(pool, b, sub) for b in budgets[:-1])

    return {
        "budgets": budgets,
        "seeds": seeds,
        "acquirers": acquirers,
        "train_images": train,
        "inference_images": infer,
        "scored_images_per_acquirer": scored(cfg.get("pool_subsample")),
        "scored_images": {a: scored(acquirer_subsample(cfg, a)) for a in acquirers},
    }


def train_path(cfg, device: str) -> str:
    """The bench row's augmentation path of a run on ``device``: ``batch`` on CUDA; on the CPU
    ``train.augment.path`` (``auto`` = ``sample`` there)."""
    if device == "cuda":
        return "batch"
    path = str(cfg.train.augment.get("path", "sample"))
    return "sample" if path == "auto" else path


def host_side(cfg, rows: list[dict], sizes: dict[str, int]) -> tuple[float, str, str] | None:
    """(host-side images/s per core of a training step, ``lazy`` or ``memory``, why) for an
    experiment on a real (margin) dataset, from the bench's ``host step`` rows: the in-memory row
    when ``dataset.in_memory`` (null: the memory rule of ``cache.memory_choice`` on this machine)
    keeps the images in RAM, else the lazy row. None for the synthetic set or without the rows."""
    if str(cfg.dataset.name) == "synthetic":
        return None
    side = int(cfg.dataset.get("store_size") or STORE_SIDE)
    nbytes = sum(int(v) for v in sizes.values()) * side * side * 3
    setting = cfg.dataset.get("in_memory")
    keep, why = memory_choice(nbytes, None if setting is None else bool(setting))
    path = "memory" if keep else "lazy"
    for r in rows:
        if r.get("what") == "host step" and r.get("path") == path and r.get("images_per_s"):
            return float(r["images_per_s"]), path, why
    return None
