"""Per-cycle diagnostics read from what ``alpose run`` stores (no model needed).

From ``RUN_DIR/<acquirer>/seed_<s>/`` (``active/loop/run_files.py``): the picks of every cycle
(``selections/cycle_<c>.npy``, picked with the model of cycle c-1), ``metrics.csv`` and the seed's
initial set (``_initial/seed_<s>/state.json``). Rows:

* overlap: Jaccard |A ∩ B| / |A ∪ B| of two acquirers' picks of one (seed, cycle), and of the
  labelled sets those picks complete (cycle 1: both picked from the same pool with the same model);
* joint gain: standard PCKh per joint per cycle and its gain over the cell's previous cycle;
* families: how the picks of a cycle split over the dataset's families (pose families of the
  synthetic set, LSP/LSPET subsets), beside the share of each family in the pool offered;
* timing: acquisition and training seconds per cycle.

The CSV files go to ``RUN_DIR/_diagnostics/`` (the underscore keeps it out of the acquirer list
of ``alpose table``/``status``), each written atomically; with ``alpose report --out PAGE``
beside the page instead (:func:`diagnostics_dir`), so a run folder that cannot be written is
only read. A damaged selection file is refused in one line naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from active.loop.run_files import INITIAL
from hourglass.errors import AlposeError
from hourglass.io import atomic_path

DIAGNOSTICS_DIR = "_diagnostics"
_SEED = re.compile(r"seed_(\d+)")
_CYCLE = re.compile(r"cycle_(\d+)\.npy")


# -- what a run holds -------------------------------------------------------------------------
def acquirer_names(run_dir: Path) -> list[str]:
    """Acquirer folders of an experiment (``_initial``, ``_diagnostics`` and hidden ones left out)."""
    if not Path(run_dir).is_dir():
        raise AlposeError(f"experiment folder not found: {run_dir} (run `alpose run` first)")
    return sorted(
        p.name for p in Path(run_dir).iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def seeds_of(run_dir: Path, acquirer: str) -> list[int]:
    """Seeds with a folder under ``RUN_DIR/<acquirer>``."""
    found = (_SEED.fullmatch(p.name) for p in (Path(run_dir) / acquirer).glob("seed_*"))
    return sorted(int(m.group(1)) for m in found if m)


def selection_cycles(run_dir: Path, acquirer: str, seed: int) -> list[int]:
    """Cycles whose picks are stored (cycle c's picks were chosen with cycle c-1's model)."""
    folder = Path(run_dir) / acquirer / f"seed_{seed}" / "selections"
    found = (_CYCLE.fullmatch(p.name) for p in folder.glob("cycle_*.npy"))
    return sorted(int(m.group(1)) for m in found if m)


def load_selection(
    run_dir: Path, acquirer: str, seed: int, cycle: int
) -> tuple[np.ndarray, np.ndarray]:
    """(picked rows, their scores) of one cycle, in the acquirer's order (most wanted first)."""
    path = Path(run_dir) / acquirer / f"seed_{seed}" / "selections" / f"cycle_{cycle}.npy"
    if not path.is_file():
        have = selection_cycles(run_dir, acquirer, seed)
        raise AlposeError(
            f"no selection {path} (acquirer {acquirer}, seed {seed}, cycle {cycle}); "
            f"stored cycles: {have or 'none'} (cycle 0 is the initial set, it has no picks)"
        )
    try:
        rec = np.load(path, allow_pickle=False)
        return np.asarray(rec["index"], np.int64), np.asarray(rec["score"], np.float64)
    except Exception as err:  # numpy raises many types for a damaged or foreign file
        raise damaged(path, err, path.parents[1]) from err


def damaged(path: Path, err: BaseException, cell: Path) -> AlposeError:
    """The one line for a result file that cannot be read: the file, why, and how to redo it."""
    reason = " ".join(f"{type(err).__name__}: {err}".split())[:160]
    return AlposeError(
        f"cannot read {path} ({reason}); it is damaged: move the cell folder {cell} aside and "
        "rerun `alpose run` to redo it"
    )


def initial_set(run_dir: Path, seed: int) -> np.ndarray:
    """The seed's initial labelled set (``_initial/seed_<s>/state.json``)."""
    path = Path(run_dir) / INITIAL / f"seed_{seed}" / "state.json"
    if not path.is_file():
        raise AlposeError(f"{path} is missing; the seed's first cycle has not finished")
    try:
        return np.sort(np.asarray(json.loads(path.read_text())["labelled"], np.int64))
    except Exception as err:  # truncated JSON, a missing key, a foreign file
        raise damaged(path, err, path.parent) from err


def labelled_before(run_dir: Path, acquirer: str, seed: int, cycle: int) -> np.ndarray:
    """The labelled set the acquirer held when it picked cycle ``cycle`` (initial set + earlier picks)."""
    parts = [initial_set(run_dir, seed)]
    parts += [load_selection(run_dir, acquirer, seed, c)[0] for c in range(1, cycle)]
    return np.sort(np.concatenate(parts))


def read_metrics(run_dir: Path, acquirer: str, seed: int) -> list[dict[str, str]]:
    """The cell's ``metrics.csv`` rows (cycle 0 comes from the shared ``_initial`` when absent)."""
    rows = []
    for owner in (INITIAL, acquirer):
        path = Path(run_dir) / owner / f"seed_{seed}" / "metrics.csv"
        if path.is_file():
            with open(path, newline="") as f:
                rows += list(csv.DictReader(f))
    by_cycle = {int(float(r["cycle"])): r for r in rows}
    return [by_cycle[c] for c in sorted(by_cycle)]


# -- overlap ----------------------------------------------------------------------------------
def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two index sets (nan when both are empty)."""
    sa, sb = set(map(int, a)), set(map(int, b))
    union = len(sa | sb)
    return len(sa & sb) / union if union else float("nan")


@dataclass(frozen=True)
class OverlapRow:
    """Agreement of two acquirers' picks in one (seed, cycle)."""

    seed: int
    cycle: int
    acquirer_a: str
    acquirer_b: str
    common: int  # rows both picked
    jaccard_picks: float
    jaccard_labelled: float  # of the labelled sets after the picks


def overlap_rows(run_dir: Path, acquirers: Sequence[str] | None = None) -> list[OverlapRow]:
    """Jaccard overlap of every pair of acquirers for every (seed, cycle) both have picks for."""
    names = list(acquirers or acquirer_names(run_dir))
    out = []
    seeds = sorted({s for a in names for s in seeds_of(run_dir, a)})
    for seed in seeds:
        have = {a: set(selection_cycles(run_dir, a, seed)) for a in names}
        cycles = sorted(set().union(*have.values())) if have else []
        for cycle in cycles:
            for a, b in combinations(names, 2):
                if cycle not in have[a] or cycle not in have[b]:
                    continue
                pa = load_selection(run_dir, a, seed, cycle)[0]
                pb = load_selection(run_dir, b, seed, cycle)[0]
                la = np.concatenate([labelled_before(run_dir, a, seed, cycle), pa])
                lb = np.concatenate([labelled_before(run_dir, b, seed, cycle), pb])
                common = len(set(pa.tolist()) & set(pb.tolist()))
                out.append(OverlapRow(seed, cycle, a, b, common, jaccard(pa, pb), jaccard(la, lb)))
    return out


def overlap_matrix(
    rows: Sequence[OverlapRow], names: Sequence[str], cycle: int | None = None
) -> np.ndarray:
    """(A, A) mean Jaccard of picks over seeds (and cycles, or one ``cycle``); 1 on the diagonal."""
    m = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(m, 1.0)
    pos = {n: i for i, n in enumerate(names)}
    sums: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if (cycle is None or r.cycle == cycle) and r.acquirer_a in pos and r.acquirer_b in pos:
            sums.setdefault((pos[r.acquirer_a], pos[r.acquirer_b]), []).append(r.jaccard_picks)
    for (i, j), values in sums.items():
        m[i, j] = m[j, i] = float(np.mean(values))
    return m


# -- per-joint gain, timing -------------------------------------------------------------------
@dataclass(frozen=True)
class JointGainRow:
    """Standard PCKh of one joint after a cycle and its gain over the previous cycle (points)."""

    acquirer: str
    seed: int
    cycle: int
    labelled: int
    joint: str
    pckh: float
    gain: float  # nan at cycle 0


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def joint_gain_rows(run_dir: Path, acquirers: Sequence[str] | None = None) -> list[JointGainRow]:
    """Per-joint standard PCKh per cycle and its change from the previous cycle, every cell."""
    out = []
    for acq in acquirers or acquirer_names(run_dir):
        for seed in seeds_of(run_dir, acq):
            rows = read_metrics(run_dir, acq, seed)
            joints = [
                k[len("standard_") :]
                for k in (rows[0] if rows else {})
                if k.startswith("standard_")
            ]
            previous: dict[str, float] = {}
            for r in rows:
                cycle = int(float(r["cycle"]))
                for j in joints:
                    value = _float(r.get(f"standard_{j}"))
                    gain = value - previous[j] if j in previous else float("nan")
                    out.append(
                        JointGainRow(acq, seed, cycle, int(float(r["labelled"])), j, value, gain)
                    )
                    previous[j] = value
    return out


@dataclass(frozen=True)
class TimingRow:
    """Wall seconds of one cycle: the acquisition that built its labelled set, and its training."""

    acquirer: str
    seed: int
    cycle: int
    acquisition_seconds: float
    train_seconds: float


def timing_rows(run_dir: Path, acquirers: Sequence[str] | None = None) -> list[TimingRow]:
    """Acquisition and training time of every cycle >= 1 (cycle 0 is shared, nothing picked)."""
    out = []
    for acq in acquirers or acquirer_names(run_dir):
        for seed in seeds_of(run_dir, acq):
            for r in read_metrics(run_dir, acq, seed):
                if int(float(r["cycle"])) >= 1:
                    out.append(
                        TimingRow(
                            acq,
                            seed,
                            int(float(r["cycle"])),
                            _float(r.get("acquisition_seconds")),
                            _float(r.get("train_seconds")),
                        )
                    )
    return out


# -- families ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilyRow:
    """How many of a cycle's picks come from one family, beside that family's share of the pool."""

    acquirer: str
    seed: int
    cycle: int
    family: str
    picked: int
    share_picks: float
    share_pool: float  # share among the unlabelled rows when the picks were made


def family_rows(
    run_dir: Path,
    family: np.ndarray,
    family_names: Sequence[str],
    pool: np.ndarray,
    acquirers: Sequence[str] | None = None,
) -> list[FamilyRow]:
    """Family make-up of every cycle's picks; ``family`` is the cache's per-row family id and
    ``pool`` the rows the experiment may label (the training split)."""
    out = []
    nf = len(family_names)
    for acq in acquirers or acquirer_names(run_dir):
        for seed in seeds_of(run_dir, acq):
            for cycle in selection_cycles(run_dir, acq, seed):
                picks = load_selection(run_dir, acq, seed, cycle)[0]
                offered = np.setdiff1d(pool, labelled_before(run_dir, acq, seed, cycle))
                n_picks = np.bincount(family[picks], minlength=nf)
                n_pool = np.bincount(family[offered], minlength=nf)
                for f, name in enumerate(family_names):
                    out.append(
                        FamilyRow(
                            acq,
                            seed,
                            cycle,
                            name,
                            int(n_picks[f]),
                            float(n_picks[f] / max(1, len(picks))),
                            float(n_pool[f] / max(1, len(offered))),
                        )
                    )
    return out


# -- CSV --------------------------------------------------------------------------------------
def _cell(value: object) -> object:
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else repr(float(value))
    return value


def write_records(
    path: Path, records: Sequence[object], fields: Sequence[str] | None = None
) -> Path:
    """Write dataclass records as CSV atomically (header from the dataclass fields; nan = empty)."""
    if fields is None:
        if not records:
            raise ValueError("give fields for an empty record list")
        fields = [f.name for f in dataclasses.fields(records[0])]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for rec in records:
            values = dataclasses.asdict(rec) if dataclasses.is_dataclass(rec) else dict(rec)
            writer.writerow([_cell(values[k]) for k in fields])
    return Path(path)


def diagnostics_dir(run_dir: Path, page: Path | None = None) -> Path:
    """Where the diagnostics CSV files of an experiment go: ``RUN_DIR/_diagnostics``, or with a
    report page written elsewhere (``alpose report --out PAGE``) ``<PAGE>_diagnostics`` beside it
    (the run folder is then only read)."""
    run_dir = Path(run_dir)
    if page is None or _same(Path(page).parent, run_dir):
        return run_dir / DIAGNOSTICS_DIR
    page = Path(page)
    return page.with_name(f"{page.stem}{DIAGNOSTICS_DIR}")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _read_only_error(run_dir: Path, flag: str, why: str) -> AlposeError:
    return AlposeError(
        f"cannot write into {run_dir} ({why}); pass {flag} to write the files elsewhere "
        "(the run folder is then only read)"
    )


def require_writable(run_dir: Path, out: Path | None, flag: str = "--out") -> None:
    """Refuse in one line, before any work, to write into a run folder that cannot be written
    when no ``out`` was given (``flag`` names the option that points elsewhere)."""
    if out is None and Path(run_dir).is_dir() and not os.access(run_dir, os.W_OK):
        raise _read_only_error(Path(run_dir), flag, "permission denied or a read-only file system")


@contextmanager
def writing_into(run_dir: Path, out: Path | None, flag: str = "--out") -> Iterator[None]:
    """Turn a refused write into the run folder (no ``out`` given) into the one line of
    :func:`require_writable`; other errors pass unchanged."""
    try:
        yield
    except OSError as err:
        if out is None and err.errno in _READ_ONLY:
            raise _read_only_error(Path(run_dir), flag, err.strerror or "not writable") from err
        raise
