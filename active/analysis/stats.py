"""Statistics of an experiment: mean ± σ over seeds, paired one-tailed t-tests, learning-curve AUC.

Results pair by seed: within a seed every acquirer starts from the same initial labelled set and
the same initial weights (``docs/architecture.md``, "Determinism").

Shapes: A acquirers, S seeds, B budgets (labelled persons). One metric of an experiment is held
as a :class:`Cube` of shape (A, S, B) with nan where a (acquirer, seed, budget) cell has no
result yet. Every function below is vectorised over A and B.

Conventions:

* σ is the sample standard deviation over seeds (``ddof=1``); it is nan where n < 2.
* The paired test is Student's paired t-test, one-tailed, on the per-seed differences of the
  seeds present for both acquirers; identical to ``scipy.stats.ttest_rel(x, y,
  alternative="greater")`` with H1 "x > y". A budget with fewer than 2 pairs or with
  differences of zero variance (e.g. cycle 0, where every acquirer shares the same model) has
  p = nan, printed as "–".
* The area under the learning curve is the trapezoid over the budgets divided by the budget
  span, so it reads as a mean PCKh over the budget range; a seed missing any budget has no AUC.
"""

from __future__ import annotations

import csv
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import optimize
from scipy import stats as sps

from active.loop.run_files import INITIAL, METRIC_COLUMNS, well_formed
from hourglass.errors import AlposeError

Alternative = Literal["beats-reference", "reference-better"]
ALTERNATIVES: tuple[str, ...] = ("beats-reference", "reference-better")
METRICS: tuple[str, ...] = ("pckh_standard", "pckh_paper")
SEED_DIR = re.compile(r"^seed_(-?\d+)$")
METRICS_FILE = "metrics.csv"


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """An experiment's results in long form: one entry per (acquirer, seed, cycle), arrays (R,)."""

    acquirer: np.ndarray  # (R,) str
    seed: np.ndarray  # (R,) int
    cycle: np.ndarray  # (R,) int
    labelled: np.ndarray  # (R,) int, the budget
    values: dict[str, np.ndarray]  # metric column -> (R,) float

    @property
    def acquirers(self) -> tuple[str, ...]:
        """Acquirer names in sorted order (the row order of every table)."""
        return tuple(sorted(set(self.acquirer.tolist())))

    def __len__(self) -> int:
        return int(self.cycle.size)


@dataclass(frozen=True)
class Cube:
    """One metric on the (acquirer, seed, budget) grid: ``values`` (A, S, B), nan where missing."""

    metric: str
    acquirers: tuple[str, ...]  # (A,)
    seeds: np.ndarray  # (S,) int
    budgets: np.ndarray  # (B,) int
    values: np.ndarray  # (A, S, B) float

    def row(self, acquirer: str) -> int:
        """Index of ``acquirer`` along axis 0."""
        return self.acquirers.index(acquirer)


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof=1) and number of seeds per (acquirer, budget): arrays (A, B)."""

    acquirers: tuple[str, ...]
    budgets: np.ndarray  # (B,)
    mean: np.ndarray  # (A, B)
    std: np.ndarray  # (A, B), nan where n < 2
    n: np.ndarray  # (A, B) int


@dataclass(frozen=True)
class PairedTests:
    """One-tailed paired t-tests of every acquirer against ``reference``: arrays (A, ...).

    ``mean_diff`` is the mean of (other - reference) for ``beats-reference`` and of
    (reference - other) for ``reference-better``: positive values support H1. The reference's
    own row is nan with ``n`` = its number of seeds.
    """

    reference: str
    alternative: str
    p: np.ndarray  # (A, ...) nan where untestable
    n: np.ndarray  # (A, ...) int, number of pairs
    mean_diff: np.ndarray  # (A, ...)
    sd_diff: np.ndarray  # (A, ...) ddof=1


@dataclass(frozen=True)
class CurveAUC:
    """Area under each seed's learning curve, normalised by the budget span (a mean metric)."""

    acquirers: tuple[str, ...]
    budgets: np.ndarray  # (B,) the budgets integrated over
    per_seed: np.ndarray  # (A, S), nan where a seed misses a budget
    mean: np.ndarray  # (A,)
    std: np.ndarray  # (A,) ddof=1
    n: np.ndarray  # (A,) int


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The well-formed rows of one ``metrics.csv``; raise AlposeError when its required columns
    are missing. A malformed row (cut short, a cell that is not a number) is left out with one
    warning line, never read as a budget: ``alpose run`` redoes its cycle."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("cycle", "labelled", *METRICS) if c not in (reader.fieldnames or [])]
        if missing:
            raise AlposeError(
                f"{path} lacks column(s) {', '.join(missing)}; expected the layout of "
                f"active/loop/run_files.py ({','.join(METRIC_COLUMNS)},...)"
            )
        rows = list(reader)
    good = [r for r in rows if well_formed(r) and None not in r]  # None: more cells than columns
    if len(good) < len(rows):
        print(
            f"warning: {path}: {len(rows) - len(good)} malformed row(s) left out; rerun "
            "`alpose run` with the same command to redo their cycles",
            file=sys.stderr,
        )
    return good


def to_float(text: str | None) -> float:
    """A CSV cell as float; empty or unparsable cells become nan."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def result_files(run_dir: Path) -> list[tuple[str, int, Path]]:
    """(acquirer, seed, metrics.csv path) for every finished-cycle file, ``_initial`` skipped."""
    found = []
    for acq_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if acq_dir.name == INITIAL or acq_dir.name.startswith((".", "_")):
            continue
        for seed_path in sorted(acq_dir.iterdir()):
            match = SEED_DIR.match(seed_path.name)
            if match and (seed_path / METRICS_FILE).is_file():
                found.append((acq_dir.name, int(match.group(1)), seed_path / METRICS_FILE))
    return found


def load_results(run_dir: str | Path) -> Results:
    """Read ``RUN_DIR/<acquirer>/seed_<s>/metrics.csv``; a repeated cycle keeps its last row."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AlposeError(f"experiment folder not found: {run_dir} (run `alpose run` first)")
    cells: dict[tuple[str, int, int], dict[str, str]] = {}
    for acquirer, seed, path in result_files(run_dir):
        for row in read_metrics(path):
            cells[(acquirer, seed, int(float(row["cycle"])))] = row
    if not cells:
        raise AlposeError(
            f"no results in {run_dir}: no <acquirer>/seed_<s>/{METRICS_FILE} with finished cycles "
            "(run `alpose run` first)"
        )
    keys = sorted(cells)
    rows = [cells[k] for k in keys]
    return Results(
        acquirer=np.array([k[0] for k in keys]),
        seed=np.array([k[1] for k in keys], dtype=int),
        cycle=np.array([k[2] for k in keys], dtype=int),
        labelled=np.array([int(float(r["labelled"])) for r in rows], dtype=int),
        values={m: np.array([to_float(r.get(m)) for r in rows]) for m in METRICS},
    )


@dataclass(frozen=True)
class CycleCost:
    """Mean wall seconds per acquisition cycle of each acquirer (cycles >= 1, every seed)."""

    acquirers: tuple[str, ...]  # (A,)
    acquire: np.ndarray  # (A,) selection time (the step that built the cycle's labelled set)
    train: np.ndarray  # (A,) training time
    cycles: np.ndarray  # (A,) int, how many (seed, cycle) rows were averaged


def cycle_costs(run_dir: str | Path) -> CycleCost:
    """Time per cycle from every ``metrics.csv`` (cycle 0 is shared and left out)."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for acquirer, _, path in result_files(Path(run_dir)):
        for row in read_metrics(path):
            if int(float(row["cycle"])) >= 1:
                rows.setdefault(acquirer, []).append(
                    (to_float(row.get("acquisition_seconds")), to_float(row.get("train_seconds")))
                )
    names = tuple(sorted(rows))
    pairs = [np.array(rows[a], dtype=float).reshape(-1, 2) for a in names]
    return CycleCost(
        acquirers=names,
        acquire=np.array([np.nanmean(p[:, 0]) if len(p) else np.nan for p in pairs]),
        train=np.array([np.nanmean(p[:, 1]) if len(p) else np.nan for p in pairs]),
        cycles=np.array([len(p) for p in pairs], dtype=int),
    )


def to_cube(results: Results, metric: str) -> Cube:
    """Scatter one metric column onto the (acquirer, seed, budget) grid."""
    if metric not in results.values:
        raise AlposeError(f"unknown metric column '{metric}'; known: {', '.join(results.values)}")
    acquirers = results.acquirers
    seeds, s_idx = np.unique(results.seed, return_inverse=True)
    budgets, b_idx = np.unique(results.labelled, return_inverse=True)
    a_idx = np.searchsorted(np.array(acquirers), results.acquirer)
    values = np.full((len(acquirers), seeds.size, budgets.size), np.nan)
    values[a_idx, s_idx, b_idx] = results.values[metric]
    return Cube(metric, acquirers, seeds, budgets, values)


# --------------------------------------------------------------------------------------------
# Summaries and tests
# --------------------------------------------------------------------------------------------


def _mean_std(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nan-aware mean, sample std (ddof=1) and count along ``axis``, without empty-slice warnings."""
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        dev = np.where(ok, x - np.expand_dims(mean, axis), 0.0)
        var = (dev**2).sum(axis=axis) / (n - 1)
    std = np.where(n >= 2, np.sqrt(np.where(n >= 2, var, 0.0)), np.nan)
    return mean, std, n


def summarise(cube: Cube) -> Summary:
    """Mean ± sample std (ddof=1) over seeds for every (acquirer, budget)."""
    mean, std, n = _mean_std(cube.values, axis=1)
    return Summary(cube.acquirers, cube.budgets, mean, std, n.astype(int))


def paired_greater(
    x: np.ndarray, y: np.ndarray, axis: int = -1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One-tailed paired t-test of H1 "x > y" along ``axis`` (pairs where both are finite).

    Returns (p, n pairs, mean of x - y, sd of x - y); p is nan where n < 2 or the differences
    have zero variance. Equals ``scipy.stats.ttest_rel(x, y, alternative="greater").pvalue``.
    """
    d = np.where(np.isfinite(x) & np.isfinite(y), x - y, np.nan)
    mean, sd, n = _mean_std(d, axis=axis)
    testable = (n >= 2) & (sd > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = np.where(testable, sps.t.sf(np.where(testable, t, 0.0), np.maximum(n - 1, 1)), np.nan)
    return p, n.astype(int), mean, sd


def _check_reference(acquirers: tuple[str, ...], reference: str, alternative: str) -> int:
    """Row of the reference; AlposeError for an unknown acquirer or direction."""
    if alternative not in ALTERNATIVES:
        raise AlposeError(
            f"unknown alternative '{alternative}'; use one of {', '.join(ALTERNATIVES)}"
        )
    if reference not in acquirers:
        raise AlposeError(
            f"reference acquirer '{reference}' has no results; acquirers found: {', '.join(acquirers)}"
        )
    return acquirers.index(reference)


def _tests_against(
    values: np.ndarray, acquirers: tuple[str, ...], reference: str, alternative: str
) -> PairedTests:
    """Paired tests of every row of ``values`` (A, S, ...) against the reference row (seeds on axis 1)."""
    r = _check_reference(acquirers, reference, alternative)
    ref = np.broadcast_to(values[r], values.shape)
    x, y = (values, ref) if alternative == "beats-reference" else (ref, values)
    p, n, mean, sd = paired_greater(x, y, axis=1)
    p[r], mean[r], sd[r] = np.nan, np.nan, np.nan
    n[r] = np.isfinite(values[r]).sum(axis=0)
    return PairedTests(reference, alternative, p, n, mean, sd)


def paired_tests(cube: Cube, reference: str, alternative: Alternative) -> PairedTests:
    """Per-budget one-tailed paired t-tests (pairs = common seeds) of each acquirer vs ``reference``.

    ``reference-better``: H1 reference > other, ``ttest_rel(ref, other, alternative="greater")``
    (the EGL++ paper tables, reference = EGL++). ``beats-reference``: H1 other > reference,
    ``ttest_rel(other, ref, alternative="greater")`` (show off a new acquirer against random).
    Arrays are (A, B).
    """
    return _tests_against(cube.values, cube.acquirers, reference, alternative)


def learning_curve_auc(cube: Cube) -> CurveAUC:
    """Trapezoid area under each (acquirer, seed) curve over all budgets / budget span."""
    budgets = cube.budgets.astype(float)
    span = budgets[-1] - budgets[0] if budgets.size >= 2 else 0.0
    if span > 0:
        per_seed = np.trapezoid(cube.values, budgets, axis=2) / span  # nan if any budget missing
    else:
        per_seed = np.full(cube.values.shape[:2], np.nan)
    mean, std, n = _mean_std(per_seed, axis=1)
    return CurveAUC(cube.acquirers, cube.budgets, per_seed, mean, std, n.astype(int))


def auc_tests(auc: CurveAUC, reference: str, alternative: Alternative) -> PairedTests:
    """The same paired one-tailed test on the per-seed AUCs: arrays (A,)."""
    return _tests_against(auc.per_seed, auc.acquirers, reference, alternative)


# --------------------------------------------------------------------------------------------
# Power
# --------------------------------------------------------------------------------------------


def critical_effect(n: int, alpha: float) -> float:
    """Smallest observed mean difference, in units of the sd of the differences, that gives p < α."""
    return float(sps.t.ppf(1 - alpha, n - 1) / math.sqrt(n)) if n >= 2 else math.nan


def min_detectable_effect(n: int, alpha: float, power: float = 0.8) -> float:
    """True mean paired difference (units of σ of the differences) detected with ``power`` at α.

    Exact for the one-tailed paired t-test: solves P(T' > t_{1-α, n-1}) = power where T' is
    noncentral t with n - 1 degrees of freedom and noncentrality δ·√n.
    """
    if n < 2:
        return math.nan
    crit = sps.t.ppf(1 - alpha, n - 1)

    def shortfall(delta: float) -> float:
        return float(sps.nct.sf(crit, n - 1, delta * math.sqrt(n)) - power)

    return float(optimize.brentq(shortfall, 1e-6, 100.0))


def power_caveat(n: int, alpha: float, sd_diff: float | None = None, power: float = 0.8) -> str:
    """One plain sentence on how little a paired test with n seeds can detect."""
    if n < 2:
        return f"With n = {n} seed(s) no paired test is possible."
    mde, crit = min_detectable_effect(n, alpha, power), critical_effect(n, alpha)
    text = (
        f"Power: with n = {n} paired seeds a one-tailed test at α = {alpha:g} detects a true mean "
        f"difference with {power:.0%} power only when it is at least {mde:.2f} σ_d (σ_d = sd of the "
        f"per-seed differences); an observed mean difference below {crit:.2f} σ_d can never reach "
        f"p < {alpha:g}."
    )
    if sd_diff is not None and np.isfinite(sd_diff) and sd_diff > 0:
        text += (
            f" Here the median σ_d is {sd_diff:.2f} points, so a real gain under "
            f"≈{mde * sd_diff:.2f} points will usually be missed; p ≥ α is not evidence of no effect."
        )
    return text
