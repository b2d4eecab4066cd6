"""``alpose evaluate --gt FILE --pred FILE``: score a prediction file against MPII or LSP ground truth."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from hourglass.errors import AlposeError
from hourglass.metrics import CONVENTIONS, format_table
from hourglass.prediction_files import DATASETS, evaluate, write_json_atomic


def run(args: argparse.Namespace) -> int:
    """Score, print the table, optionally write the JSON."""
    result = evaluate(args.gt, args.pred, args.dataset, args.convention, args.threshold)
    print(format_table(result))
    if args.json is not None:
        try:
            write_json_atomic(args.json, result.to_json())
        except OSError as err:
            raise AlposeError(f"cannot write --json {args.json}: {err.strerror or err}") from err
        print(f"wrote {args.json}")
    return 0


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the ``evaluate`` flags to ``parser`` and return the function that runs the command."""
    parser.add_argument(
        "--gt", type=Path, required=True, help="MPII detections_our_format.mat or LSP joints.mat"
    )
    parser.add_argument(
        "--pred", type=Path, required=True, help="predictions (.mat v5/v7.3 or .h5)"
    )
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), help="default: detected from the GT variables"
    )
    parser.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="standard",
        help="standard (published leaderboards) or paper (the anchor code's lenient variant)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="default: 0.5 (MPII) / 0.2 (LSP) standard; 10/19 / 4/19 paper",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the result as JSON (percent) to this file"
    )
    return run
