"""Compare a run's ``results.csv`` with a committed one: the same cells, PCKh, picks and weights?

``python scripts/compare_results.py runs/quickstart/results.csv results/quickstart/results.csv``
prints one line: identical, or the first cell that differs. (`make demo` runs it.) Under the
default portable numerics a rerun on any x86-64 CPU with AVX2 should be identical; under
``numerics=native`` or another ``threads=`` it is not expected to be.
"""

from __future__ import annotations

import sys
from pathlib import Path

from active.analysis.fingerprint import first_difference, read_csv


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    ours, committed = (Path(a) for a in argv)
    for path in (ours, committed):
        if not path.is_file():
            print(
                f"error: {path} not found (`alpose table RUN_DIR` writes results.csv)",
                file=sys.stderr,
            )
            return 2
    expected = read_csv(committed)
    diff = first_difference(expected, read_csv(ours), label="committed")
    if diff is None:
        print(f"{ours}: identical to {committed} ({len(expected)} cells: PCKh, picks, weights)")
    else:
        print(f"{ours} differs from {committed}: first difference at {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
