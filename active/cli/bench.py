"""``alpose bench [what] [options]``: speed measurements, one subcommand per benchmark.

``speed`` (the default: training, inference, acquisition and data-path images/s, and with
``experiment=NAME`` that experiment's wall time), ``egl`` (EGL++ per-target gradient norms against
the reference loop) and ``numerics`` (portable against native CPU numerics). Timings are only as
good as the machine is idle: each prints the load average.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from active.bench.egl import run_egl
from active.bench.numerics import MODELS as NUMERICS_MODELS
from active.bench.numerics import run_numerics
from active.bench.speed import DATA_ROWS, QUICK_DATA_ROWS
from active.bench.speed_report import run_speed


def speed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="experiment=NAME: also estimate its wall time")
    p.add_argument(
        "--models", default="hourglass_small,hourglass_paper", help="configs/model names"
    )
    p.add_argument(
        "--acquirers",
        default=None,
        help="configs/acquirer names, comma-separated (default: all on the small model)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 2)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument(
        "--numerics-rounds",
        type=int,
        default=1,
        help="rounds of the portable-against-native CPU timing, each mode in its own process "
        "(0 = skip it)",
    )
    p.add_argument(
        "--data-rows",
        type=int,
        default=None,
        help=f"rows of the MPII-size bench cache for the cache read and host step rows "
        f"(default {DATA_ROWS:,}, --quick {QUICK_DATA_ROWS}; 0 = skip them)",
    )
    p.add_argument(
        "--data-cache",
        default=None,
        metavar="DIR",
        help="folder of the bench cache, reused when present (default ~/.cache/alpose/bench)",
    )
    p.add_argument(
        "--data-compression",
        default="checksum",
        choices=["checksum", "lzf", "none"],
        help="how the bench cache stores images: checksum (uncompressed + Fletcher-32, as caches "
        "are written now), lzf (as older versions wrote them), none",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the rows as JSON")


BENCHES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def numerics_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=NUMERICS_MODELS, help="configs/model names, comma-separated")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in both modes (default: every core)",
    )
    p.add_argument("--rounds", type=int, default=2, help="alternating native/portable rounds")
    p.add_argument("--quick", action="store_true", help="one small batch per model (tests)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the rows as JSON")


def _egl_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        default="hourglass_small,hourglass_paper",
        help="configs/model names, comma-separated",
    )
    p.add_argument("--images", type=int, default=2, help="images timed on the fast path")
    p.add_argument(
        "--reference-images", type=int, default=1, help="images timed on the reference loop"
    )
    p.add_argument("--targets", type=int, default=30, help="targets per image (EGL++'s k)")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="input px for every model (default: 64 small, 256 paper)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="OUT", help="also write the rows as JSON")


BENCHES["egl"] = (
    "EGL++ per-target gradient norms: fast path vs reference loop",
    _egl_flags,
    run_egl,
)


BENCHES["numerics"] = (
    "portable against native CPU numerics: training and inference images/s, small and paper model",
    numerics_flags,
    run_numerics,
)


BENCHES["speed"] = (
    "training, inference, acquisition and data-path images/s (small and paper model, CPU and GPU); "
    "experiment=NAME also estimates that experiment's wall time",
    speed_flags,
    run_speed,
)
DEFAULT_BENCH = "speed"  # `alpose bench` with no name, or with only options / experiment=NAME


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the bench subcommands to ``parser``; returns the dispatcher. Arguments that do not
    start with a bench name go to ``speed`` (``alpose bench --json OUT``, ``experiment=...``)."""
    sub = parser.add_subparsers(dest="bench", metavar="what", required=True)
    for name, (help_text, flags, _) in BENCHES.items():
        flags(sub.add_parser(name, help=help_text, description=help_text))
    parse = parser.parse_args

    def parse_args(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if not args or (args[0] not in BENCHES and args[0] not in ("-h", "--help")):
            args = [DEFAULT_BENCH, *args]
        return parse(args, namespace)

    parser.parse_args = parse_args
    return lambda args: BENCHES[args.bench][2](args)
