"""``alpose report RUN_DIR [--out report.html]``: one self-contained HTML page of an experiment.

The page holds the ``alpose table`` results and curves, the diagnostics of :mod:`active.analysis.report_page`
and a gallery per acquirer; pictures are embedded, so it reads offline and prints. The CSV files
and PNGs go to ``RUN_DIR/_diagnostics/``, or with ``--out PAGE`` elsewhere to
``<PAGE>_diagnostics/`` beside the page, so a run folder that cannot be written is only read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from active.analysis import figures, report_page, run_diagnostics
from active.cli.options import add_pool_pass_flags
from hourglass.errors import AlposeError
from hourglass.io import atomic_path


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the flags of ``alpose report``; returns the function that runs it."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="experiment folder (runs/<experiment>)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="HTML file to write (default: RUN_DIR/report.html); its CSV files and pictures go "
        "beside it (<name>_diagnostics/), so the run folder is only read",
    )
    parser.add_argument(
        "--seeds",
        help="comma list of seeds for the pass-based diagnostics (default: the smallest seed)",
    )
    parser.add_argument(
        "--cycles",
        default="first",
        help="acquisition cycles for the pass-based diagnostics: first (default; every acquirer "
        "picked with the same model), all, or a comma list such as 1,3",
    )
    parser.add_argument("--tiles", type=int, default=6, help="images per gallery row (default 6)")
    add_pool_pass_flags(parser)
    return run


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,2`` -> [0, 2]; None keeps the default."""
    if not text:
        return None
    try:
        return sorted({int(s) for s in text.split(",")})
    except ValueError as err:
        raise AlposeError(f"--seeds takes a comma list of integers, got {text!r}") from err


def _page_path(out: Path) -> Path:
    """``--out``: the page itself, or ``report.html`` in a folder given instead."""
    return out / "report.html" if out.is_dir() else out


def run(args: argparse.Namespace) -> int:
    """Collect the diagnostics, write CSVs, PNGs and the HTML page."""
    if args.tiles < 1:
        raise AlposeError(f"--tiles must be at least 1, got {args.tiles}")
    out = _page_path(args.out) if args.out is not None else Path(args.run_dir) / "report.html"
    run_diagnostics.require_writable(args.run_dir, args.out, "--out PAGE.html")
    ins = report_page.collect(
        args.run_dir,
        seeds=parse_seeds(args.seeds),
        cycles=report_page.parse_cycles(args.cycles),
        data_dir=args.data_dir,
        device=args.device,
        rescore=not args.no_rescore,
    )
    out_dir = run_diagnostics.diagnostics_dir(args.run_dir, out if args.out else None)
    page, pngs = report_page.build_page(ins, args.tiles, out_dir if args.out else None)
    with run_diagnostics.writing_into(args.run_dir, args.out, "--out PAGE.html"):
        written = report_page.write_csvs(ins, out_dir)
        for name, png in pngs.items():
            with atomic_path(out_dir / "figures" / f"{name}.png") as tmp:
                tmp.write_bytes(png)
        with atomic_path(out) as tmp:
            tmp.write_text(page, encoding="utf-8")
    if ins.note:
        print(f"note: {ins.note}", file=sys.stderr)
    print(
        f"wrote {out} ({len(page) / 1e6:.1f} MB, {len(pngs)} pictures); {len(written)} CSV files "
        f"and the pictures in {out_dir}"
    )
    return 0


__all__ = ["figures", "register", "run"]
