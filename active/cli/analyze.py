"""``alpose analyze <analysis>``: analyses of finished runs. One so far: ``learning-loss``.

``alpose analyze learning-loss RUN_DIR`` loads a cycle's weights-only checkpoint from an
``alpose run`` experiment, computes the pose model's true per-sample losses on held-out images
(the run's report split, never labelled), fits Gamma(k, Θ) with integer k by maximum likelihood
and prints the LearningLoss++ poster's two tables (closed forms in :mod:`active.analysis.loss_gamma`).
With ``--k K --theta T`` no run is needed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from active.analysis import egl_last_layer, loss_gamma, loss_tables
from active.analysis.cell_diagnostics import open_run
from hourglass.errors import AlposeError
from hourglass.io import write_json

# analysis name -> (one-line help, function that adds its flags and returns its runner)
ANALYSES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Callable]]] = {}


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add one subcommand per analysis; returns the function that runs the chosen one."""
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS")
    for name, (help_text, add) in ANALYSES.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(runner=add(sub_parser))

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "runner", None) is None:
            raise AlposeError(f"name an analysis: alpose analyze {{{','.join(ANALYSES)}}} ...")
        return int(args.runner(args) or 0)

    return run


# -- learning-loss ---------------------------------------------------------------------------
def _add_learning_loss(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        nargs="?",
        help="experiment folder of `alpose run` (runs/<experiment>); not needed with --k/--theta",
    )
    parser.add_argument(
        "--acquirer", help="whose model (default: random if present, else the first)"
    )
    parser.add_argument("--seed", type=int, help="which seed (default: the smallest one present)")
    parser.add_argument(
        "--cycle", type=int, help="which cycle's model (default: the last finished)"
    )
    parser.add_argument(
        "--split", help="images whose losses are fitted (default: the run's report split, held out)"
    )
    parser.add_argument("--data-dir", help="dataset folder (default: the run's paths.data)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    parser.add_argument("--k", help="integer Gamma shape (with --theta: no run needed)")
    parser.add_argument("--theta", help="Gamma scale Θ (with --k)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write both tables as JSON")
    return run_learning_loss


ANALYSES["learning-loss"] = (
    "fit Gamma(k, Θ) to a run's true per-sample losses; LearningLoss++ closeness and gradient tables",
    _add_learning_loss,
)


def run_learning_loss(args: argparse.Namespace) -> int:
    """Fit (or take) the Gamma, print both tables, optionally write them as JSON."""
    given = args.k is not None or args.theta is not None
    if given:
        if args.k is None or args.theta is None:
            raise AlposeError("give --k and --theta together (or neither, to fit them to a run)")
        if args.run_dir is not None:
            raise AlposeError("give either RUN_DIR (to fit k and Θ) or --k with --theta, not both")
        k, theta = loss_gamma.check_gamma(args.k, args.theta)
        fit = loss_gamma.GammaFit(k, theta, "given")
        print(f"LearningLoss++ analysis for Gamma(k={k}, Θ={theta:.6g}) given on the command line")
    else:
        if args.run_dir is None:
            raise AlposeError("give RUN_DIR (an `alpose run` result folder) or --k with --theta")
        losses, where = loss_tables.held_out_losses(
            args.run_dir,
            args.acquirer,
            args.seed,
            args.cycle,
            args.split,
            args.data_dir,
            args.device,
        )
        fit = loss_gamma.fit_gamma_mle(losses)
        print(
            f"LearningLoss++ analysis: fitted k={fit.k}, Θ={fit.theta:.6g} (maximum likelihood, "
            f"integer k) to {where}; observed mean {losses.mean():.6g}, sd {losses.std():.6g}"
        )
    result = loss_tables.tables(fit.k, fit.theta)
    print(loss_tables.render(fit, result), end="")
    if args.json is not None:
        payload = {"k": fit.k, "theta": fit.theta, "method": fit.method, **result}
        if fit.method == "mle":
            payload["n_losses"] = fit.n
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


# -- egl-last ----------------------------------------------------------------------------------
def _add_egl_last(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="an `alpose run` folder")
    parser.add_argument("--acquirer", help="whose cell (default: egl_pp if present, else random)")
    parser.add_argument("--seed", type=int, help="which seed (default: the smallest one present)")
    parser.add_argument(
        "--cycle", type=int, help="which acquisition cycle (default: the last finished)"
    )
    parser.add_argument(
        "--rows", type=int, default=300, help="pool rows scored both ways (seeded; default 300)"
    )
    parser.add_argument("--data-dir", help="dataset folder (default: the run's paths.data)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write scores and figures")
    return run_egl_last


def run_egl_last(args: argparse.Namespace) -> int:
    """Exact vs last-layer EGL++ scores on one cell's offered pool: rank agreement and cost."""
    run = open_run(args.run_dir, args.data_dir, args.device)
    cell = egl_last_layer.default_cell(args.run_dir, args.acquirer, args.seed, args.cycle)
    result = egl_last_layer.compare(run, *cell, rows=args.rows)
    print(egl_last_layer.render(result))
    if args.json is not None:
        write_json(args.json, asdict(result))
        print(f"wrote {args.json}")
    return 0


ANALYSES["egl-last"] = (
    "EGL++'s last-layer approximation against the exact score on a run's pool: Spearman, top-k overlap, cost",
    _add_egl_last,
)
