"""``alpose inspect RUN_DIR --acquirer A --seed S --cycle C``: one cell's diagnostics in the terminal.

The numbers of ``alpose report`` for one (acquirer, seed, acquisition cycle): how well the score
found failures (Spearman, lift, hit rate), the overlap of its picks with every other acquirer's,
the families of the picks, the per-joint PCKh gain of the cycle its picks were trained in, the
time taken, and the highest-priority picks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from active.analysis import cell_diagnostics, run_diagnostics
from active.analysis.cell_text import render
from active.cli.options import add_pool_pass_flags
from hourglass.errors import AlposeError


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the flags of ``alpose inspect``; returns the function that runs it."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="experiment folder (runs/<experiment>)"
    )
    parser.add_argument("--acquirer", required=True, help="acquirer folder name, e.g. coreset")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--cycle",
        type=int,
        required=True,
        help="acquisition cycle (>= 1: its picks were chosen with cycle C-1's model)",
    )
    parser.add_argument("--top", type=int, default=10, help="picks listed (default 10)")
    add_pool_pass_flags(parser)
    return run


def run(args: argparse.Namespace) -> int:
    """Diagnose one cell and print it."""
    if args.cycle < 1:
        raise AlposeError(
            "--cycle: acquisition cycles start at 1 (cycle 0 is the initial set, no picks)"
        )
    names = run_diagnostics.acquirer_names(args.run_dir)
    if args.acquirer not in names:
        raise AlposeError(
            f"no acquirer '{args.acquirer}' in {args.run_dir}; found: {', '.join(names) or 'none'}"
        )
    run_diagnostics.load_selection(
        args.run_dir, args.acquirer, args.seed, args.cycle
    )  # clear error if absent
    run_ = cell_diagnostics.open_run(args.run_dir, args.data_dir, args.device)
    cell = cell_diagnostics.diagnose(
        run_, args.acquirer, args.seed, args.cycle, not args.no_rescore
    )
    families = []
    if run_.data.family is not None and run_.data.family_names:
        families = run_diagnostics.family_rows(
            args.run_dir, run_.data.family, run_.data.family_names, run_.pool, [args.acquirer]
        )
    print(render(cell, args.run_dir, families, args.top), end="")
    return 0
