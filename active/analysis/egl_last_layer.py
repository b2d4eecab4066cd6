"""How close is EGL++'s cheap last-layer approximation to the exact score?

For one cell of an ``alpose run`` experiment (acquirer, seed, cycle c) the model that picked cycle
c's rows (cycle c-1's checkpoint) scores a seeded subset of the pool it was offered twice with the
run's EGL++ settings: ``scope="all"`` (every Conv2d/Linear parameter, exact) and ``scope="last"``
(only the layers whose output reaches the heatmaps through parameter-free ops). Both use the same
labelled set, neighbours and weights, so they differ only in which parameters' gradients count.
Reported: Spearman ρ of the two scores, the share of the exact top-m the approximation also puts
in its top-m (m at the run's own pick rate, and at 10 %), and the seconds per image of each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from active.acquirers.base import AcquisitionContext
from active.analysis import cell_diagnostics, run_diagnostics
from active.analysis.run_models import find_checkpoint
from hourglass.errors import AlposeError

EGL = "egl_pp"


@dataclass
class ApproxComparison:
    """Exact and last-layer EGL++ scores of the same rows, and how well they agree."""

    run_dir: str
    acquirer: str  # whose cell (model and labelled set)
    seed: int
    cycle: int
    offered: int  # rows the cell was offered at that cycle
    rows: list[int]  # the scored subset (sorted)
    exact: list[float]
    last: list[float]
    spearman: float
    top_share: float  # the cell's own pick rate (picked / offered)
    top_overlap: float  # share of the exact top-m also in the approximation's top-m
    top10_overlap: float  # the same at m = 10 % of the rows
    exact_s_per_image: float
    last_s_per_image: float


def top_overlap(exact: np.ndarray, approx: np.ndarray, m: int) -> float:
    """|top-m(exact) ∩ top-m(approx)| / m, highest scores first (ties: lower position first)."""
    if m < 1:
        return float("nan")
    a = np.argsort(-exact, kind="stable")[:m]
    b = np.argsort(-approx, kind="stable")[:m]
    return float(len(np.intersect1d(a, b)) / m)


def compare(
    run: cell_diagnostics.OpenRun,
    acquirer: str,
    seed: int,
    cycle: int,
    rows: int,
) -> ApproxComparison:
    """Score ``rows`` rows of cell (acquirer, seed, cycle)'s offered pool both ways."""
    if rows < 2:
        raise AlposeError("--rows must be at least 2 (a rank correlation needs pairs)")
    exact_acq = cell_diagnostics.build_acquirer(run, EGL, scope="all")
    last_acq = cell_diagnostics.build_acquirer(run, EGL, scope="last")
    labelled = run_diagnostics.labelled_before(run.run_dir, acquirer, seed, cycle)
    model, _, _ = cell_diagnostics.selecting_model(run, acquirer, seed, cycle)
    offered, rng = cell_diagnostics.offered_pool(
        run, labelled, seed, cycle, cell_diagnostics.build_acquirer(run, acquirer)
    )
    picked = len(run_diagnostics.load_selection(run.run_dir, acquirer, seed, cycle)[0])
    pick = np.random.default_rng(seed).choice(len(offered), min(rows, len(offered)), replace=False)
    subset = np.sort(offered[pick])
    ctx = AcquisitionContext.for_training(
        model, run.data, labelled, subset, rng, run.device, run.train_cfg, None, False, run.protocol
    )
    scores, seconds = {}, {}
    for name, acq in (("exact", exact_acq), ("last", last_acq)):
        t0 = time.perf_counter()
        scores[name] = np.asarray(acq.scores(ctx, subset), np.float64)
        seconds[name] = (time.perf_counter() - t0) / len(subset)
    exact, last = scores["exact"], scores["last"]
    share = picked / max(1, len(offered))
    return ApproxComparison(
        run_dir=str(run.run_dir),
        acquirer=acquirer,
        seed=seed,
        cycle=cycle,
        offered=len(offered),
        rows=subset.tolist(),
        exact=exact.tolist(),
        last=last.tolist(),
        spearman=cell_diagnostics.spearman(exact, last),
        top_share=share,
        top_overlap=top_overlap(exact, last, max(1, round(share * len(subset)))),
        top10_overlap=top_overlap(exact, last, max(1, round(0.1 * len(subset)))),
        exact_s_per_image=seconds["exact"],
        last_s_per_image=seconds["last"],
    )


def default_cell(run_dir: Path, acquirer: str | None, seed: int | None, cycle: int | None):
    """(acquirer, seed, cycle): egl_pp (else random, else the first) at its smallest seed and last
    acquisition cycle unless given."""
    if acquirer is None:
        names = {p.name for p in Path(run_dir).iterdir() if p.is_dir()}
        acquirer = EGL if EGL in names else ("random" if "random" in names else None)
    ckpt = find_checkpoint(Path(run_dir), acquirer, seed, cycle)
    if ckpt.cycle < 1:
        raise AlposeError(
            f"{ckpt.acquirer} seed {ckpt.seed} has no acquisition cycle yet (cycle 0 picks nothing)"
        )
    return ckpt.acquirer, ckpt.seed, ckpt.cycle


def render(c: ApproxComparison) -> str:
    """A short plain-text summary."""
    m = max(1, round(c.top_share * len(c.rows)))
    ratio = c.exact_s_per_image / max(c.last_s_per_image, 1e-12)
    lines = [
        ("Spearman rho, last vs exact", f"{c.spearman:.3f}"),
        (f"top-{m} overlap (the run's pick rate, {c.top_share:.1%})", f"{c.top_overlap:.3f}"),
        ("top-10% overlap", f"{c.top10_overlap:.3f}"),
        ("seconds per image, exact", f"{c.exact_s_per_image:.4f}"),
        ("seconds per image, last layer", f"{c.last_s_per_image:.4f} ({ratio:.1f}x cheaper)"),
    ]
    width = max(len(label) for label, _ in lines)
    head = (
        f"EGL++ last-layer approximation vs exact: {c.run_dir} {c.acquirer} seed {c.seed} "
        f"cycle {c.cycle}, {len(c.rows)} of the {c.offered} rows offered, scored by the model "
        "that picked them"
    )
    return "\n".join([head, *(f"  {label:<{width}}  {value}" for label, value in lines)])
