"""``alpose analyze <analysis>``: analyses of finished runs. One so far: ``learning-loss``.

``alpose analyze learning-loss RUN_DIR`` loads a cycle's weights-only checkpoint from an
``alpose run`` experiment, computes the pose model's true per-sample losses on held-out images
(the run's report split, never labelled), fits Gamma(k, Θ) with integer k by maximum likelihood
and prints the LearningLoss++ poster's two tables (closed forms in :mod:`active.analysis.loss_gamma`).
With ``--k K --theta T`` no run is needed.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from active.analysis import loss_gamma
from hourglass.errors import AlposeError

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
@dataclass(frozen=True)
class Checkpoint:
    """Which model of an experiment is analysed."""

    path: Path
    acquirer: str
    seed: int
    cycle: int


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


def load_run_config(run_dir: Path):
    """The resolved config an ``alpose run`` experiment stored; clear errors when it is missing."""
    from omegaconf import OmegaConf

    if not run_dir.is_dir():
        raise AlposeError(
            f"run folder not found: {run_dir} (give an `alpose run` result folder, runs/<name>, "
            "or --k and --theta)"
        )
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise AlposeError(f"{run_dir} has no config.yaml; is it an `alpose run` result folder?")
    return OmegaConf.load(path)


def _seeds(folder: Path) -> list[int]:
    found = (re.fullmatch(r"seed_(\d+)", p.name) for p in folder.glob("seed_*"))
    return sorted(int(m.group(1)) for m in found if m)


def find_checkpoint(
    run_dir: Path, acquirer: str | None, seed: int | None, cycle: int | None
) -> Checkpoint:
    """The checkpoint of (acquirer, seed, cycle); defaults: random or the first, the smallest seed,
    the last finished cycle. Cycle 0 is the seed's shared initial model (``_initial``)."""
    from active.loop.experiment import load_state
    from active.loop.run_files import INITIAL

    names = sorted(
        p.name for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    if acquirer is None:
        acquirer = "random" if "random" in names else (names[0] if names else INITIAL)
    folder = run_dir / acquirer
    if not folder.is_dir():
        raise AlposeError(
            f"no results of acquirer '{acquirer}' in {run_dir}; found: {', '.join(names) or 'none'}"
        )
    seeds = _seeds(folder)
    if seed is None:
        if not seeds:
            raise AlposeError(f"{folder} holds no seed_<s> folders; has the run started?")
        seed = seeds[0]
    seed_folder = folder / f"seed_{seed}"
    if cycle is None:
        cycle = load_state(seed_folder).cycle
        if cycle < 0:
            raise AlposeError(
                f"{seed_folder} has no finished cycle (see `alpose status {run_dir}`)"
            )
    owner = run_dir / INITIAL / f"seed_{seed}" if cycle == 0 else seed_folder
    path = owner / "checkpoints" / f"cycle_{cycle}.pt"
    if not path.is_file():
        have = sorted(
            int(m.group(1))
            for p in (seed_folder / "checkpoints").glob("cycle_*.pt")
            if (m := re.fullmatch(r"cycle_(\d+)\.pt", p.name))
        )
        raise AlposeError(
            f"checkpoint not found: {path} (acquirer {acquirer}, seed {seed}, cycle {cycle}; "
            f"checkpoints there: cycles {have or 'none'}; seeds: {seeds or 'none'})"
        )
    return Checkpoint(path, acquirer, seed, cycle)


def true_losses(model, data, indices: np.ndarray, train_cfg, device) -> np.ndarray:
    """The pose loss of every image in ``indices`` (no augmentation), with the targets and loss
    of training's selection pass (``hourglass.train.selection_metrics``), per image."""
    import torch

    from hourglass.evaluate import iterate_outputs
    from hourglass.train import eval_losses

    out_losses = []
    with torch.no_grad():
        for idx, out in iterate_outputs(
            model, data, indices, batch_size=train_cfg.eval_batch_size, device=device
        ):
            out_losses.append(eval_losses(out, data, idx, train_cfg, device))
    return torch.cat(out_losses).double().cpu().numpy() if out_losses else np.zeros(0)


@dataclass
class RunModel:
    """A run's model at one cycle, with the data and config it was trained with."""

    model: Any
    data: Any
    cfg: Any
    checkpoint: Checkpoint


def load_run_model(
    run_dir: Path,
    acquirer: str | None = None,
    seed: int | None = None,
    cycle: int | None = None,
    data_dir: str | Path | None = None,
) -> RunModel:
    """Rebuild the model of (acquirer, seed, cycle) from the run's stored config and its
    weights-only checkpoint, and load the dataset the run used (``run_cli.load_data``)."""
    import torch

    from active.loop.runner import load_data
    from hourglass.factories import build_model

    cfg = load_run_config(run_dir)
    ckpt = find_checkpoint(run_dir, acquirer, seed, cycle)
    if data_dir:
        cfg.paths.data = str(data_dir)
    cfg.progress = False
    data = load_data(cfg)
    model = build_model(cfg.model, data.num_joints, data.image_size)
    state = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise AlposeError(f"{ckpt.path} is not an `alpose run` checkpoint (no 'model' entry)")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise AlposeError(
            f"{ckpt.path} does not fit the model in {run_dir / 'config.yaml'}: "
            f"{str(err).splitlines()[0]}"
        ) from err
    return RunModel(model, data, cfg, ckpt)


def run_losses(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """True per-sample losses of the chosen model on held-out images, and a line describing them."""
    from hourglass.device import resolve_device
    from hourglass.factories import train_config

    run = load_run_model(args.run_dir, args.acquirer, args.seed, args.cycle, args.data_dir)
    split = args.split or str(run.cfg.protocol.report_split)
    indices = run.data.indices(split)
    tcfg = train_config(run.cfg)
    device = resolve_device(args.device)
    losses = true_losses(run.model.to(device), run.data, indices, tcfg, device)
    ckpt = run.checkpoint
    where = (
        f"{len(losses)} true per-sample losses ({tcfg.loss}) of {args.run_dir} "
        f"{ckpt.acquirer} seed {ckpt.seed} cycle {ckpt.cycle} on the '{split}' split"
    )
    return losses, where


def tables(k: int, theta: float) -> dict[str, list[list[float]]]:
    """The two tables as ``{p_close: [[δ, P]], ll_pp_coefficient: [[δ, E[p_i|δ]]]}``."""
    p = loss_gamma.p_close(loss_gamma.P_CLOSE_DELTAS, k, theta)
    c = loss_gamma.ll_pp_coefficient(loss_gamma.COEFFICIENT_DELTAS, k, theta)
    return {
        "p_close": [[d, float(v)] for d, v in zip(loss_gamma.P_CLOSE_DELTAS, p, strict=True)],
        "ll_pp_coefficient": [
            [d, float(v)] for d, v in zip(loss_gamma.COEFFICIENT_DELTAS, c, strict=True)
        ],
    }


def render(fit: loss_gamma.GammaFit, result: dict[str, list[list[float]]]) -> str:
    """Both tables as plain text."""
    lines = [
        f"Gamma(k={fit.k}, Θ={fit.theta:.6g}): mean loss kΘ = {fit.mean:.6g}, "
        f"sd √k·Θ = {math.sqrt(fit.k) * fit.theta:.6g}",
        "",
        "P(|X − Y| ≤ δ): share of image pairs whose true losses differ by at most δ",
        "  δ        P(|X−Y| ≤ δ)",
    ]
    lines += [f"  {d:<8.3f} {v:.3f}" for d, v in result["p_close"]]
    lines += [
        "",
        "Gradient on the predicted loss l̂_i of the lower-loss image i of a pair, l_j − l_i = δ:",
        "LearningLoss++ pulls q_i towards E[p_i | δ] (gradient q_i − E[p_i | δ], smooth in δ);",
        f"Learning Loss's gradient is ±{loss_gamma.LEARNING_LOSS_GRADIENT:g} for every δ (ties "
        "included) until the predicted gap exceeds its margin.",
        "  δ        E[p_i | δ]   LL++ at q_i=½   LL",
    ]
    lines += [
        f"  {d:<8.3f} {v:<12.4f} {0.5 - v:<15.4f} {loss_gamma.LEARNING_LOSS_GRADIENT:g}"
        for d, v in result["ll_pp_coefficient"]
    ]
    return "\n".join(lines) + "\n"


def run_learning_loss(args: argparse.Namespace) -> int:
    """Fit (or take) the Gamma, print both tables, optionally write them as JSON."""
    from hourglass.io import write_json

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
        losses, where = run_losses(args)
        fit = loss_gamma.fit_gamma_mle(losses)
        print(
            f"LearningLoss++ analysis: fitted k={fit.k}, Θ={fit.theta:.6g} (maximum likelihood, "
            f"integer k) to {where}; observed mean {losses.mean():.6g}, sd {losses.std():.6g}"
        )
    result = tables(fit.k, fit.theta)
    print(render(fit, result), end="")
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
    from dataclasses import asdict

    from active.analysis import egl_last_layer
    from active.analysis.cell_diagnostics import open_run
    from hourglass.io import write_json

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
