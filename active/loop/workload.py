"""How much work an experiment's cycles are: images trained, evaluated and scored.

The one count behind ``alpose bench experiment=NAME`` (the whole experiment) and
``alpose run --dry-run`` (the cycles still to run), so the two estimates cannot drift apart.
"""

from __future__ import annotations

from typing import Any


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
