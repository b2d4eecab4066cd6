"""One ``alpose train`` job: fit a stacked hourglass, report PCKh and write the run's files.

Trains on the dataset's training split, picks the best epoch on ``dataset.select_split``, prints the
standard PCKh table of every ``dataset.report_splits`` split and writes ``metrics.json`` and the
best weights into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from hourglass.datasets.registry import load_dataset
from hourglass.device import resolve_device
from hourglass.environment import describe
from hourglass.evaluate import headline, predict_coords, score
from hourglass.factories import build_model, train_config
from hourglass.io import save_torch, write_json
from hourglass.metrics import format_table
from hourglass.model import count_parameters
from hourglass.numerics import cpu_threads
from hourglass.train import NonFiniteLossError, fit


def _print_epoch(total: int):
    """One log line per epoch (used when the progress bar is off, e.g. in CI logs)."""

    def show(log) -> None:
        print(
            f"epoch {log.epoch}/{total}: train loss {log.train_loss:.4g}, selection loss "
            f"{log.select_loss:.4g}, PCKh {log.select_pckh:.2f}, lr {log.lr:.2g}, {log.seconds:.1f} s",
            flush=True,
        )

    return show


def run_training(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, evaluate and write the run's files; returns the metrics written to metrics.json."""
    data = load_dataset(cfg.dataset, cfg.paths.data)
    tcfg = train_config(cfg)
    if tcfg.device == "cpu" or (tcfg.device == "auto" and not torch.cuda.is_available()):
        mode = str(cfg.get("numerics", "native"))
        torch.set_num_threads(cpu_threads(mode, cfg.get("threads"), torch.get_num_threads()))
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model, data.num_joints, data.image_size)
    train_idx = data.indices("train")
    select_idx = data.indices(cfg.dataset.select_split)
    print(
        f"alpose train: {cfg.dataset.name} ({len(train_idx)} train / {len(select_idx)} "
        f"{cfg.dataset.select_split} crops, {data.image_size} px), model {cfg.model.name} "
        f"({count_parameters(model):,} parameters), {tcfg.epochs} epochs, device {tcfg.device}"
    )
    try:
        result = fit(
            model,
            data,
            train_idx,
            select_idx,
            tcfg,
            progress=bool(cfg.progress),
            on_epoch=None if cfg.progress else _print_epoch(tcfg.epochs),
        )
    except NonFiniteLossError:
        save_torch(run_dir / "weights_last_good.pt", model.state_dict())
        raise
    save_torch(run_dir / "weights.pt", result.best_state)
    metrics: dict = {
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
        "train_images_per_second": round(
            len(train_idx)
            * len(result.history)
            / max(sum(h.seconds for h in result.history), 1e-9),
            1,
        ),
        "history": [vars(h) for h in result.history],
        "environment": describe(
            str(cfg.get("numerics", "native")),
            torch.get_num_threads(),
            str(resolve_device(tcfg.device)),
        ),
    }
    for split in cfg.dataset.report_splits:
        idx = data.indices(split)
        t0 = time.perf_counter()
        coords = predict_coords(model, data, idx, loss=tcfg.loss, decode_method=tcfg.decode)
        results = score(data, idx, coords)
        metrics[split] = {conv: r.to_json() for conv, r in results.items()}
        metrics[split]["eval_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"\n[{split}: {len(idx)} crops]")
        print(format_table(results["standard"]))
        if "paper" in results:
            print(f"paper-convention PCKh (anchor): {headline(results['paper']):.2f}")
    write_json(run_dir / "metrics.json", metrics)
    first = cfg.dataset.report_splits[0]
    std = metrics[first]["standard"]
    print(
        f"\n{first} standard PCKh@0.5 Mean: {std.get('Mean', std.get('Total')):.2f}  "
        f"(best epoch {result.best_epoch}/{tcfg.epochs}, {result.seconds / 60:.1f} min)\n"
        f"wrote {run_dir / 'metrics.json'}"
    )
    return metrics
