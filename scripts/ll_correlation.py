#!/usr/bin/env python3
"""Measure how well Learning Loss and LearningLoss++ heads rank the true per-sample pose loss.

Per seed: one pose net trains on ``--train`` random persons of the training split with BOTH heads
beside it (the same batches and pose weights: a paired comparison); then, on the held-out split,
the Spearman correlation between each head's predicted loss and the true per-sample loss.
Usage (from the checkout): ``.venv/bin/python scripts/ll_correlation.py [--train 1000] [--epochs
20] [--seeds 0 1 2] [--set experiment=quickstart paths.data=data ...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from active.acquirers.learning_loss import LearningLossAcquirer, true_and_predicted_losses  # noqa: E402
from active.loop.runner import load_data  # noqa: E402
from hourglass.config import config_dir  # noqa: E402
from hourglass.device import resolve_device  # noqa: E402
from hourglass.factories import build_model, train_config  # noqa: E402
from hourglass.train import fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="test", help="held-out split to correlate on")
    parser.add_argument("--head", default="conv", choices=["conv", "pooled"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=["experiment=quickstart"])
    args = parser.parse_args()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=[*args.overrides, "progress=false"])
    data = load_data(cfg)
    device = resolve_device(str(cfg.device))
    pool, held = data.indices("train"), data.indices(args.split)
    print(
        f"train {args.train} of {len(pool)}, held-out {args.split} {len(held)}, {args.epochs} epochs"
    )
    table = {"margin": [], "kl": []}
    for seed in args.seeds:
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, 101])
        train = np.sort(rng.choice(pool, args.train, replace=False))
        torch.manual_seed(1_000_003 * seed + 7)
        model = build_model(cfg.model, data.num_joints, data.image_size)
        heads = []
        for objective in table:
            torch.manual_seed(1_000_003 * seed + 29)  # the same initial head for both objectives
            head = LearningLossAcquirer(objective=objective, head=args.head).auxiliary_head(
                model, data, "standard"
            )
            head.name = objective
            heads.append(head)
        tcfg = dataclasses.replace(train_config(cfg), epochs=args.epochs, seed=seed)
        select = data.indices("val")
        fit(model, data, train, select, tcfg, aux_heads=heads, progress=False)
        true, predicted = true_and_predicted_losses(
            model, data, held, tcfg, {h.name: h.module for h in heads}, device
        )
        rho = {k: float(spearmanr(true, v).statistic) for k, v in predicted.items()}
        for k, v in rho.items():
            table[k].append(v)
        print(
            f"seed {seed}: Spearman LL {rho['margin']:.3f}  LL++ {rho['kl']:.3f}  "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    for k, name in (("margin", "Learning Loss"), ("kl", "LearningLoss++")):
        v = np.array(table[k])
        print(
            f"{name}: mean {v.mean():.3f} +- {v.std(ddof=1) if len(v) > 1 else 0:.3f} (n={len(v)})"
        )


if __name__ == "__main__":
    main()
