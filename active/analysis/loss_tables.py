"""The Learning Loss analysis of a run: true held-out losses, their Gamma fit's two tables.

Closed forms in :mod:`active.analysis.loss_gamma`; ``alpose analyze learning-loss`` prints them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from active.analysis import loss_gamma
from active.analysis.run_models import load_run_model, true_losses
from hourglass.device import resolve_device
from hourglass.factories import train_config


def held_out_losses(
    run_dir: Path,
    acquirer: str | None,
    seed: int | None,
    cycle: int | None,
    split: str | None,
    data_dir: str | None,
    device: str,
) -> tuple[np.ndarray, str]:
    """True per-sample losses of the chosen model on held-out images, and a line describing them."""
    run = load_run_model(run_dir, acquirer, seed, cycle, data_dir)
    split = split or str(run.cfg.protocol.report_split)
    indices = run.data.indices(split)
    tcfg = train_config(run.cfg)
    on = resolve_device(device)
    losses = true_losses(run.model.to(on), run.data, indices, tcfg, on)
    ckpt = run.checkpoint
    where = (
        f"{len(losses)} true per-sample losses ({tcfg.loss}) of {run_dir} "
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
