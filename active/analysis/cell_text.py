"""One cell's diagnostics as plain text (``alpose inspect``): score against true error, overlap,
families, per-joint gain, time, and the highest-priority picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from active.analysis import cell_diagnostics, run_diagnostics


def _f(x: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(x) else f"{x:.{digits}f}"


def render(cell: cell_diagnostics.CellDiagnostics, run_dir: Path, families: list, top: int) -> str:
    """The cell's diagnostics as plain text."""
    r = cell.row
    lines = [
        f"{r.acquirer} seed {r.seed} cycle {r.cycle}: picked {r.picked} of {r.pool} offered rows "
        f"with the model of cycle {r.cycle - 1}",
        "",
        "How well the score finds failures (true error = mean joint distance / normaliser):",
        f"  Spearman(priority, true error), offered pool: {_f(r.spearman_pool)}"
        + ("" if r.ranked else "  (pool not re-scored: this acquirer has no per-row scores)"),
        f"  Spearman(priority, true error), picks only:   {_f(r.spearman_picks)}",
        f"  mean true error: picks {_f(r.mean_error_picks)}, pool {_f(r.mean_error_pool)}, "
        f"lift {_f(r.error_lift, 2)} (random ~1)",
        f"  hit rate (picks among the pool's {r.picked} largest errors): {_f(r.hit_rate, 2)} "
        f"(random {_f(r.hit_rate_random, 2)})",
    ]
    if np.isfinite(r.rescore_max_diff):
        lines.append(
            f"  re-computed scores of the picks vs stored: max |diff| {r.rescore_max_diff:.3g}"
        )
    timing = [
        t
        for t in run_diagnostics.timing_rows(run_dir, [r.acquirer])
        if t.seed == r.seed and t.cycle == r.cycle
    ]
    if timing:
        t = timing[0]
        lines.append(
            f"\nTime: acquisition {_f(t.acquisition_seconds, 2)} s, training of cycle {r.cycle} "
            f"{_f(t.train_seconds, 2)} s"
        )
    overlap = [
        o
        for o in run_diagnostics.overlap_rows(run_dir)
        if o.seed == r.seed and o.cycle == r.cycle and r.acquirer in (o.acquirer_a, o.acquirer_b)
    ]
    if overlap:
        lines += [
            "",
            "Overlap with the other acquirers' picks (same seed and cycle):",
            "  acquirer            common  Jaccard picks  Jaccard labelled",
        ]
        for o in overlap:
            other = o.acquirer_b if o.acquirer_a == r.acquirer else o.acquirer_a
            lines.append(
                f"  {other:<19} {o.common:>6}  {_f(o.jaccard_picks):>13}  {_f(o.jaccard_labelled):>16}"
            )
    fam = [
        f for f in families if f.acquirer == r.acquirer and f.seed == r.seed and f.cycle == r.cycle
    ]
    if fam:
        lines += ["", "Families of the picks (share of picks vs share of the pool offered):"]
        lines += [
            f"  {f.family:<14} {f.picked:>4}  {f.share_picks:6.1%}  vs {f.share_pool:6.1%}"
            for f in fam
        ]
    gains = [
        g
        for g in run_diagnostics.joint_gain_rows(run_dir, [r.acquirer])
        if g.seed == r.seed and g.cycle == r.cycle
    ]
    if gains:
        lines += [
            "",
            f"Standard PCKh per joint after training cycle {r.cycle} (gain over cycle {r.cycle - 1}):",
        ]
        lines += [f"  {g.joint:<12} {_f(g.pckh, 1):>6}  ({g.gain:+.1f})" for g in gains]
    order = np.argsort(-cell.pick_priority, kind="stable")[:top]
    pos = np.searchsorted(cell.rows, cell.picks[order])
    lines += ["", f"Picks by priority (first {len(order)}):", "  row      priority   true error"]
    lines += [
        f"  {int(cell.picks[i]):<8} {cell.pick_priority[i]:>9.4g}   {cell.error[p]:.3f}"
        for i, p in zip(order, pos, strict=True)
    ]
    return "\n".join(lines) + "\n"
