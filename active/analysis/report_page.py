"""What each acquirer picked and why: collect every diagnostic of a run, write the CSV files and
pictures, and assemble the HTML page of ``alpose report`` (:mod:`active.analysis.html_page`).

Cheap diagnostics (overlap, per-joint gain, families, timing) cover every (acquirer, seed, cycle);
the pass-based ones (true errors, Spearman, galleries, PCA; :mod:`active.analysis.cell_diagnostics`) cover
the chosen seeds and cycles, by default the smallest seed's cycle 1, where every acquirer picked
from the same pool with the same shared model, so one inference pass serves them all.

Files (atomic) in ``RUN_DIR/_diagnostics/`` (or beside a page written elsewhere,
``run_diagnostics.diagnostics_dir``): ``overlap.csv``, ``joint_gain.csv``, ``timing.csv``,
``families.csv`` (datasets with families), ``scores.csv`` (one :class:`ScoreRow` per diagnosed
cell), ``samples/<acquirer>_seed<s>_cycle<c>.csv`` (per training row: role, family, true error,
priority, PCA coordinates) and ``figures/*.png``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from active.analysis import cell_diagnostics, figures, html_page, run_diagnostics, stats, tables
from active.analysis.tables import METRIC_FLAGS, pick_reference
from hourglass.errors import AlposeError


@dataclass
class Insight:
    """Every diagnostic of one experiment, ready to print, write or draw."""

    run_dir: Path
    names: list[str]
    overlap: list[run_diagnostics.OverlapRow]
    gains: list[run_diagnostics.JointGainRow]
    timing: list[run_diagnostics.TimingRow]
    families: list[run_diagnostics.FamilyRow] = field(default_factory=list)
    cells: list[cell_diagnostics.CellDiagnostics] = field(default_factory=list)
    run: cell_diagnostics.OpenRun | None = None
    note: str | None = None  # why the pass-based parts are missing
    table: object | None = None  # tables.Table of the headline metric


def parse_cycles(text: str | None) -> str | list[int]:
    """``--cycles``: ``first`` (default), ``all`` or a comma list of integers >= 1."""
    if text in (None, "", "first"):
        return "first"
    if text == "all":
        return "all"
    try:
        cycles = sorted({int(c) for c in str(text).split(",")})
    except ValueError as err:
        raise AlposeError(
            f"--cycles takes first, all or a comma list like 1,3; got {text!r}"
        ) from err
    if cycles[0] < 1:
        raise AlposeError("--cycles: acquisition cycles start at 1 (cycle 0 is the initial set)")
    return cycles


def results_table(run_dir: Path, metric: str = "standard", reference: str | None = None):
    """The ``alpose table`` statistics of the run (tables.Table)."""
    cube = stats.to_cube(stats.load_results(run_dir), METRIC_FLAGS[metric])
    ref = pick_reference(cube.acquirers, reference)
    info = tables.read_experiment_info(run_dir)
    return tables.build_table(cube, info, ref, "beats-reference", 0.1, stats.cycle_costs(run_dir))


def collect(
    run_dir: Path,
    seeds: Sequence[int] | None = None,
    cycles: str | Sequence[int] = "first",
    data_dir: str | None = None,
    device: str = "auto",
    rescore: bool = True,
    model_pass: bool = True,
) -> Insight:
    """Read the run, open its data and model (when possible) and compute the diagnostics."""
    run_dir = Path(run_dir)
    names = run_diagnostics.acquirer_names(run_dir)
    if not names:
        raise AlposeError(f"{run_dir} holds no acquirer results (run `alpose run` first)")
    all_seeds = sorted({s for a in names for s in run_diagnostics.seeds_of(run_dir, a)})
    missing = sorted(set(seeds or ()) - set(all_seeds))
    if missing:
        raise AlposeError(
            f"--seeds: {run_dir} has no seed {', '.join(map(str, missing))}; its seeds are "
            f"{', '.join(map(str, all_seeds)) or 'none'} (pass some of them, or leave --seeds out)"
        )
    ins = Insight(
        run_dir,
        names,
        run_diagnostics.overlap_rows(run_dir, names),
        run_diagnostics.joint_gain_rows(run_dir, names),
        run_diagnostics.timing_rows(run_dir, names),
    )
    try:
        ins.table = results_table(run_dir)
    except AlposeError as err:
        ins.note = str(err)
    if not model_pass:
        ins.note = "model pass skipped (--no-model)"
        return ins
    try:
        ins.run = cell_diagnostics.open_run(run_dir, data_dir, device)
    except AlposeError as err:
        ins.note = f"no pass-based diagnostics: {err}"
        return ins
    data = ins.run.data
    if data.family is not None and data.family_names:
        ins.families = run_diagnostics.family_rows(
            run_dir, data.family, data.family_names, ins.run.pool, names
        )
    for seed in seeds if seeds is not None else all_seeds[:1]:
        for acq in names:
            have = run_diagnostics.selection_cycles(run_dir, acq, seed)
            wanted = have[:1] if cycles == "first" else have if cycles == "all" else cycles
            for cycle in wanted:
                if cycle in have:
                    ins.cells.append(cell_diagnostics.diagnose(ins.run, acq, seed, cycle, rescore))
    return ins


def write_csvs(ins: Insight, out_dir: Path) -> list[Path]:
    """The diagnostics CSV files (see the module docstring)."""
    written = []
    for name, records, cls in (
        ("overlap.csv", ins.overlap, run_diagnostics.OverlapRow),
        ("joint_gain.csv", ins.gains, run_diagnostics.JointGainRow),
        ("timing.csv", ins.timing, run_diagnostics.TimingRow),
        ("scores.csv", [c.row for c in ins.cells], cell_diagnostics.ScoreRow),
    ):
        fields = [f.name for f in dataclasses.fields(cls)]
        written.append(run_diagnostics.write_records(out_dir / name, records, fields))
    if ins.families:
        written.append(run_diagnostics.write_records(out_dir / "families.csv", ins.families))
    for cell in ins.cells:
        written.append(cell_diagnostics.write_samples(ins.run, cell, out_dir))
    return written


# -- pictures ---------------------------------------------------------------------------------
def cell_gallery(
    run: cell_diagnostics.OpenRun, cell: cell_diagnostics.CellDiagnostics, n: int = 6
) -> figures.Gallery:
    """Top-``n`` picks by the acquirer's priority, and the ``n`` lowest-priority rows of the offered
    pool (lowest picks when the pool was not re-scored), with predicted and true skeletons."""
    order = np.argsort(-cell.pick_priority, kind="stable")
    top = cell.picks[order[:n]]
    if cell.row.ranked:
        cand = np.flatnonzero(cell.offered & (cell.role != "selected"))
        low = cand[np.argsort(cell.priority[cand], kind="stable")[:n]]
        bottom, where = cell.rows[low], "offered pool, not picked"
    else:
        bottom, where = cell.picks[order[::-1][:n]], "lowest among the picks"
    unranked = np.ptp(cell.pick_priority) == 0 if len(cell.picks) else True

    def group(label: str, rows: np.ndarray) -> figures.GalleryGroup:
        pos = np.searchsorted(cell.rows, rows)
        caps = [
            f"#{r} s={cell.priority[p] + 0.0:.3g} e={cell.error[p]:.2f}"
            for r, p in zip(rows, pos, strict=True)
        ]
        return figures.GalleryGroup(label, rows, cell.coords[pos], caps)

    r = cell.row
    head = f"{r.acquirer} seed {r.seed} cycle {r.cycle}"
    if unranked:
        groups = [group(f"{head}: picks (no ranking score: shown in pick order)", cell.picks[:n])]
    else:
        groups = [
            group(f"{head}: highest priority (picked)", top),
            group(f"{head}: lowest priority ({where})", bottom),
        ]
    return figures.render_gallery(run.data, groups, cols=n)


def _mean_by(rows, key, value) -> dict:
    out: dict = {}
    for r in rows:
        v = getattr(r, value)
        if np.isfinite(v):
            out.setdefault(key(r), []).append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


def joint_gain_matrix(ins: Insight) -> tuple[np.ndarray, list[str]]:
    """(acquirer x joint) mean gain per cycle (cycles >= 1, every seed), and the joint names."""
    joints = list(dict.fromkeys(r.joint for r in ins.gains))
    mean = _mean_by([r for r in ins.gains if r.cycle >= 1], lambda r: (r.acquirer, r.joint), "gain")
    m = np.array([[mean.get((a, j), np.nan) for j in joints] for a in ins.names])
    return m.reshape(len(ins.names), len(joints)), joints


def family_shares(ins: Insight) -> tuple[dict[str, np.ndarray], list[str]]:
    """Mean family shares of each acquirer's picks (every seed and cycle) and of the first pool."""
    fams = list(dict.fromkeys(r.family for r in ins.families))
    picks = _mean_by(ins.families, lambda r: (r.acquirer, r.family), "share_picks")
    first = min((r.cycle for r in ins.families), default=1)
    pool = _mean_by([r for r in ins.families if r.cycle == first], lambda r: r.family, "share_pool")
    shares = {f"pool (cycle {first})": np.array([pool.get(f, 0.0) for f in fams])}
    shares.update({a: np.array([picks.get((a, f), 0.0) for f in fams]) for a in ins.names})
    return shares, fams


# -- the page ---------------------------------------------------------------------------------
def _results_section(ins: Insight, pngs: dict[str, bytes]) -> html_page.Section:
    sec = html_page.Section("Results", "results")
    t = ins.table
    if t is None:
        return sec.note(ins.note or "no finished cycles")
    header = ["acquirer", *map(str, t.budgets), "AUC"]
    rows = tables.table_rows(t)
    sec.add(
        f"<h3>{html_page.esc(tables.metric_label(t))}, mean ± sd over seeds (p vs {html_page.esc(t.tests.reference)})</h3>"
    )
    sec.add(
        html_page.table(
            header,
            [[label, *(c.text for c in cells)] for label, cells in rows],
            [[False, *(c.bold for c in cells)] for _, cells in rows],
            css_id="results-table",
        )
    )
    sec.add(
        "<ol class='note'>"
        + "".join(f"<li>{html_page.esc(x)}</li>" for x in tables.footnote(t))
        + "</ol>"
    )
    pngs["curves"] = figures.curves_png(t)
    sec.add(html_page.figure(pngs["curves"], "Learning curves: mean ± σ over seeds per acquirer."))
    return sec


def _scores_section(ins: Insight) -> html_page.Section:
    sec = html_page.Section("How well the score finds failures", "scores")
    sec.note(
        "True error: mean over scored joints of |predicted − true| / normaliser, with the model that "
        "made the picks. Priority: the acquirer's score, negated where it wants the lowest. "
        "ρ pool: Spearman of priority and true error over the offered pool (re-scored with the "
        "acquirer's own scores on that model); ρ picks: among the picks, from the stored scores. "
        "Lift: mean error of the picks / of the pool (random ≈ 1). Hit rate: share of the picks "
        "among the pool's k largest errors (random: k / pool)."
    )
    if ins.note:
        sec.note(ins.note)
    if not ins.cells:
        return sec
    header = [
        "acquirer",
        "seed",
        "cycle",
        "pool",
        "k",
        "ρ pool",
        "ρ picks",
        "error pool",
        "error picks",
        "lift",
        "hit rate",
        "random",
        "re-score Δ",
        "seconds",
    ]
    rows = [
        [
            r.acquirer,
            r.seed,
            r.cycle,
            r.pool,
            r.picked,
            r.spearman_pool,
            r.spearman_picks,
            r.mean_error_pool,
            r.mean_error_picks,
            r.error_lift,
            r.hit_rate,
            r.hit_rate_random,
            r.rescore_max_diff,
            r.acquisition_seconds,
        ]
        for r in (c.row for c in ins.cells)
    ]
    return sec.add(html_page.table(header, rows, css_id="scores-table"))


def _overlap_section(ins: Insight, pngs: dict[str, bytes]) -> html_page.Section:
    sec = html_page.Section("Agreement between acquirers", "overlap")
    if len(ins.names) < 2 or not ins.overlap:
        return sec.note("one acquirer only: nothing to compare")
    first = min(r.cycle for r in ins.overlap)
    for cycle, label in (
        (first, f"cycle {first} (same model and pool for all)"),
        (None, "every cycle"),
    ):
        m = run_diagnostics.overlap_matrix(ins.overlap, ins.names, cycle)
        key = f"overlap_cycle{cycle}" if cycle is not None else "overlap_all"
        pngs[key] = figures.overlap_heatmap(
            m,
            ins.names,
            f"Jaccard of picks, cycle {cycle}"
            if cycle is not None
            else "Jaccard of picks, all cycles",
        )
        sec.add(
            html_page.figure(pngs[key], f"Mean Jaccard overlap of the picks over seeds, {label}.")
        )
    return sec


def _gain_section(ins: Insight, pngs: dict[str, bytes]) -> html_page.Section:
    sec = html_page.Section("Per-joint gain", "joints")
    m, joints = joint_gain_matrix(ins)
    if not joints or not np.isfinite(m).any():
        return sec.note("no cycle after the first yet")
    pngs["joint_gain"] = figures.joint_gain_heatmap(
        m, ins.names, joints, "Standard PCKh gain per cycle"
    )
    return sec.add(
        html_page.figure(
            pngs["joint_gain"],
            "Mean change of each joint's standard PCKh from one cycle to the "
            "next (points; cycles ≥ 1, every seed).",
        )
    )


def _family_section(ins: Insight, pngs: dict[str, bytes]) -> html_page.Section | None:
    if not ins.families:
        return None
    sec = html_page.Section("Families picked", "families")
    shares, fams = family_shares(ins)
    pngs["families"] = figures.family_bars(shares, fams, "Family make-up of the picks")
    sec.add(
        html_page.figure(
            pngs["families"],
            "Share of each family (synthetic: pose family) among the "
            "picks, mean over seeds and cycles; the first bar is the pool offered.",
        )
    )
    header = ["acquirer", *fams]
    return sec.add(
        html_page.table(header, [[a, *(float(v) for v in s)] for a, s in shares.items()])
    )


def _timing_section(ins: Insight) -> html_page.Section:
    sec = html_page.Section("Acquisition time", "timing")
    acq = _mean_by(ins.timing, lambda r: r.acquirer, "acquisition_seconds")
    train = _mean_by(ins.timing, lambda r: r.acquirer, "train_seconds")
    rows = [[a, acq.get(a, np.nan), train.get(a, np.nan)] for a in ins.names]
    sec.note("Wall seconds per cycle (mean over seeds and cycles ≥ 1) as the run measured them.")
    return sec.add(html_page.table(["acquirer", "acquisition s", "training s"], rows))


def _cell_sections(ins: Insight, pngs: dict[str, bytes], tiles: int) -> list[html_page.Section]:
    out = []
    for name in ins.names:
        cells = [c for c in ins.cells if c.row.acquirer == name]
        if not cells:
            continue
        sec = html_page.Section(f"Acquirer: {name}", f"acq-{name}")
        for cell in cells:
            r = cell.row
            tag = f"{name}_seed{r.seed}_cycle{r.cycle}"
            sec.add(
                f"<h3>seed {r.seed}, cycle {r.cycle}: {r.picked} picked of {r.pool} offered</h3>"
            )
            pngs[f"gallery_{tag}"] = figures.png_bytes(cell_gallery(ins.run, cell, tiles).image)
            sec.add(
                html_page.figure(
                    pngs[f"gallery_{tag}"],
                    "Green: true skeleton; magenta: the selecting "
                    "model's prediction. s = priority, e = true error.",
                )
            )
            title = f"{name} seed {r.seed} cycle {r.cycle}: ρ pool {r.spearman_pool:.2f}, picks {r.spearman_picks:.2f}"
            pngs[f"scatter_{tag}"] = figures.score_scatter(cell, title)
            pngs[f"pca_{tag}"] = figures.pca_map(
                cell, f"{name} seed {r.seed} cycle {r.cycle}: embeddings (PCA)"
            )
            sec.add(html_page.figure(pngs[f"scatter_{tag}"], "Priority against true error."))
            sec.add(
                html_page.figure(
                    pngs[f"pca_{tag}"], "Pooled embeddings of the training split, 2D PCA."
                )
            )
        out.append(sec)
    return out


def build_page(
    ins: Insight, tiles: int = 6, diagnostics: Path | None = None
) -> tuple[str, dict[str, bytes]]:
    """The HTML page and every picture in it (name -> PNG bytes); ``diagnostics``: the folder
    its CSV files go to (default: the run's ``_diagnostics``)."""
    pngs: dict[str, bytes] = {}
    info = tables.read_experiment_info(ins.run_dir)
    sections = [
        _results_section(ins, pngs),
        _scores_section(ins),
        _overlap_section(ins, pngs),
        _gain_section(ins, pngs),
    ]
    fam = _family_section(ins, pngs)
    sections += [fam] if fam else []
    sections.append(_timing_section(ins))
    sections += _cell_sections(ins, pngs, tiles)
    seeds = sorted({s for a in ins.names for s in run_diagnostics.seeds_of(ins.run_dir, a)})
    intro = [
        f"Experiment {info.name}: dataset {info.dataset or '?'}, protocol {info.protocol or '?'}, "
        f"budgets {list(info.budgets) if info.budgets else '?'}, seeds {seeds}, acquirers "
        f"{', '.join(ins.names)}.",
        "Made by `alpose report`; CSV files of every number are in "
        + (f"{diagnostics}." if diagnostics is not None else "the run's _diagnostics folder."),
    ]
    return html_page.render_page(f"alpose report: {info.name}", intro, sections), pngs
