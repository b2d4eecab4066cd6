"""``alpose status RUN_DIR``: which (acquirer, seed, cycle) cells of an experiment are done, and
in which environment they were computed (:mod:`active.analysis.progress`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from active.analysis.progress import collect, environment_lines, render


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the flags of ``alpose status``; returns the function that runs it."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="experiment folder (runs/<experiment>)"
    )
    return run


def run(args: argparse.Namespace) -> int:
    """Print the progress grid and the environment; exit 0 whether or not it is complete."""
    print(render(collect(args.run_dir), args.run_dir), end="")
    for line in environment_lines(args.run_dir):
        print(line)
    return 0
