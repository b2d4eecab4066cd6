"""``alpose table RUN_DIR``: mean ± σ, paired one-tailed t-tests and learning-curve AUC of an experiment.

Reads ``RUN_DIR/<acquirer>/seed_<s>/metrics.csv`` (``active/loop/run_files.py``), prints the markdown
table and writes ``table.md``, ``table.tex``, ``table.csv``, ``auc.csv`` and ``curves.png``
(formats in :mod:`active.analysis.tables`) into ``--out`` (default: RUN_DIR itself), and ``results.csv``:
every (acquirer, seed, cycle) cell's PCKh and hashes of its picks and weights
(:mod:`active.analysis.fingerprint`), which a rerun under portable numerics reproduces exactly.
With ``--out`` the run folder is only read (it may be read-only); without it a run folder that
cannot be written is refused in one line that says to pass ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from active.analysis import stats, tables
from active.analysis.fingerprint import fingerprint, write_csv
from active.analysis.run_diagnostics import require_writable, writing_into
from active.analysis.tables import DEFAULT_REFERENCE, METRIC_FLAGS, pick_reference
from hourglass.errors import AlposeError


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the flags of ``alpose table``; returns the function that runs it."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="experiment folder (runs/<experiment>)"
    )
    parser.add_argument(
        "--reference",
        metavar="ACQ",
        help="acquirer every other one is tested against (default: the run config's "
        f"table.reference, e.g. egl_pp in the paper experiments; else {DEFAULT_REFERENCE} if "
        "present, else the first acquirer)",
    )
    parser.add_argument(
        "--alternative",
        choices=stats.ALTERNATIVES,
        default=None,
        help="H1 of the one-tailed paired t-test: beats-reference (acquirer > reference) or "
        "reference-better (reference > acquirer, as in the EGL++ tables); default: the run "
        "config's table.alternative, else beats-reference",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="significance level; p < alpha is bold (default 0.1)",
    )
    parser.add_argument(
        "--metric",
        choices=tuple(METRIC_FLAGS),
        default="standard",
        help="standard PCKh@0.5 (default) or the paper's lenient PCKh (compare with published numbers)",
    )
    parser.add_argument("--out", type=Path, help="folder for the report files (default: RUN_DIR)")
    return run


def _present(info: tables.ExperimentInfo, acquirers: tuple[str, ...]) -> str | None:
    """The run config's reference when its results are there (a partial run may lack it)."""
    return info.reference if info.reference in acquirers else None


def run(args: argparse.Namespace) -> int:
    """Load the results, run the statistics, write the reports, print the markdown table."""
    if not 0 < args.alpha < 1:
        raise AlposeError(f"--alpha must lie strictly between 0 and 1, got {args.alpha}")
    require_writable(args.run_dir, args.out, "--out DIR")
    results = stats.load_results(args.run_dir)
    cube = stats.to_cube(results, METRIC_FLAGS[args.metric])
    info = tables.read_experiment_info(args.run_dir)
    reference = pick_reference(cube.acquirers, args.reference or _present(info, cube.acquirers))
    alternative = args.alternative or info.alternative or "beats-reference"
    if alternative not in stats.ALTERNATIVES:
        raise AlposeError(
            f"table.alternative must be one of {', '.join(stats.ALTERNATIVES)}, got {alternative!r}"
        )
    cost = stats.cycle_costs(args.run_dir)
    table = tables.build_table(cube, info, reference, alternative, args.alpha, cost)
    out = args.out or args.run_dir
    rows = fingerprint(args.run_dir)
    with writing_into(args.run_dir, args.out, "--out DIR"):
        written = tables.write_reports(table, out)
        written.append(out / "results.csv")  # per (acquirer, seed, cycle): what a rerun must match
        write_csv(rows, written[-1])
    print(tables.render_markdown(table), end="")
    print(f"wrote {', '.join(p.name for p in written)} to {written[0].parent}", file=sys.stderr)
    return 0
