"""``alpose bench`` (speed): the measured rows as a table, the portable-against-native round, and
the wall-time estimate of a whole experiment (``experiment=NAME``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from active.acquirers.registry import known_acquirers
from active.bench.numerics import format_rows as numerics_table
from active.bench.numerics import measure
from active.bench.speed import (
    DATA_ROWS,
    EXPERIMENT_CONFIGS,
    MODELS,
    QUICK_DATA_ROWS,
    SpeedRow,
    compose,
    default_data_cache,
    link_baselines,
    run_data_path,
    run_model,
)
from active.bench.text_table import aligned
from active.loop.workload import STORE_SIDE, host_side, split_sizes, train_path, train_rate, work_of
from hourglass import numerics
from hourglass.errors import AlposeError
from hourglass.io import write_json


def run_speed(args: argparse.Namespace) -> int:
    """``alpose bench [experiment=NAME] [--json OUT]``."""
    overrides = [o for o in args.overrides if o]
    bad = [o for o in overrides if not o.startswith("experiment=")]
    if bad:
        raise AlposeError(f"unknown bench argument(s) {bad}; use experiment=NAME or a bench name")
    cpu_threads = args.threads or min(2, os.cpu_count() or 1)
    devices = [torch.device("cpu")]
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        raise AlposeError("--device cuda asked for, but no CUDA device is available")
    cfg = None
    if overrides:
        cfg = compose("run", overrides)
        models = [str(cfg.model.name)]

        with open_dict(cfg):
            if cfg.get("seed") is not None:  # `alpose run seed=S` runs that seed alone
                cfg.seeds = [int(cfg.seed)]
            cfg.seed = int(cfg.get("seed") or 0)
        EXPERIMENT_CONFIGS[models[0]] = cfg
        acquirers = list(cfg.acquirers)
    else:
        models = args.models.split(",")
        acquirers = args.acquirers.split(",") if args.acquirers else []
    load_before = os.getloadavg()[0]
    print(
        f"alpose bench: models {models}, devices {[d.type for d in devices]}, CPU threads "
        f"{cpu_threads}, numerics {numerics.active()} ({torch.backends.cpu.get_cpu_capability()} kernels)"
    )
    rows: list[SpeedRow] = []
    for name in models:
        if name not in MODELS and cfg is None:
            raise AlposeError(f"unknown model {name}; known: {', '.join(MODELS)}")
        acq = acquirers
        if cfg is None and args.acquirers is None:
            acq = default_acquirers(name, args.quick)
        rows += run_model(
            name, devices, acq, cpu_threads, args.quick, log=lambda m: print(m, flush=True)
        )
    data_cache = None
    data_rows = args.data_rows
    if data_rows is None:  # an experiment on the synthetic set reads no margin cache
        synthetic = cfg is not None and str(cfg.dataset.name) == "synthetic"
        data_rows = 0 if synthetic else QUICK_DATA_ROWS if args.quick else DATA_ROWS
    if data_rows > 0:
        folder = Path(args.data_cache) if args.data_cache else default_data_cache()
        more, data_cache = run_data_path(
            folder, data_rows, args.data_compression, args.quick, log=lambda m: print(m, flush=True)
        )
        rows += more
    link_baselines(rows)
    print(format_table(rows))
    load_after = os.getloadavg()[0]
    print(
        f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores; "
        "data path, cache read and host step rows use one thread (per core); ratio = img/s "
        "over the 'vs' row's img/s"
    )
    if data_cache is not None:
        built = data_cache["build_seconds"]
        print(
            f"cache read / host step: {data_cache['rows']} rows of {STORE_SIDE} px "
            f"({data_cache['image_gb']:.2f} GB of images, {data_cache['file_gb']:.2f} GB on disk, "
            f"{data_cache['compression']}; "
            + (f"built in {built:.0f} s" if built is not None else "reused")
            + f"; in-memory load {data_cache['in_memory_load_seconds']:.1f} s); cache read "
            "img/s = rows/s of random batches of 16 (fancy: the old h5py fancy-indexed read); "
            "host step = cut plan + rows into a pinned buffer, no warp or targets (device work)"
        )
    payload: dict[str, Any] = {
        "bench": "speed",
        "cpu_threads": cpu_threads,
        "cores": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "rows": [asdict(r) for r in rows],
        "data_cache": data_cache,
    }
    if cfg is None and args.numerics_rounds > 0:
        print("portable against native CPU numerics (`alpose bench numerics` for more rounds):")
        numeric_rows = measure(models, cpu_threads, args.numerics_rounds, args.quick)
        print(numerics_table(numeric_rows))
        payload["numerics"] = [asdict(r) for r in numeric_rows]
    if cfg is not None:
        sizes, source = split_sizes(cfg)
        ests = [estimate(cfg, rows, d.type, sizes, source, cpu_threads) for d in devices]
        for e in ests:
            print(format_estimate(e))
        payload["estimate"] = ests
    if args.json:
        write_json(Path(args.json), payload)
        print(f"wrote {args.json}")
    return 0


def default_acquirers(model: str, quick: bool) -> list[str]:
    """Every shipped acquirer on the small model; on the paper model (slow on a CPU) the cheap
    ones unless a GPU is present."""
    names = known_acquirers()
    if quick:
        return ["random", "coreset"]
    if model == "hourglass_small" or torch.cuda.is_available():
        return names
    return [n for n in names if n in ("random", "coreset", "multipeak", "learning_loss")]


def estimate(
    cfg,
    rows: list[SpeedRow],
    device: str,
    sizes: dict[str, int],
    source: str,
    threads: int = 1,
) -> dict:
    """Wall time of the experiment from the measured per-image costs on ``device``. On a real
    dataset training is also bounded by the host side of its steps (``host_side``, per core, on
    the feeder's one worker thread; ``workload.train_rate``)."""
    model = str(cfg.model.name)
    work = work_of(cfg, sizes)
    path = train_path(cfg, device)
    find = {r.key: r for r in rows}
    step = find[f"train|{model}|{device}|{path}"].images_per_s
    host = host_side(cfg, [asdict(r) for r in rows], sizes)
    train = train_rate(step, host[0] if host else None)  # one feeder thread builds the batches
    infer = find[f"inference|{model}|{device}|-"].images_per_s
    seconds = {
        "train": work["train_images"] / train,
        "inference": work["inference_images"] / infer,
    }
    for a in work["acquirers"]:
        r = find.get(f"acquire {a}|{model}|{device}|-")
        if r is not None:
            seconds[f"acquire {a}"] = work["scored_images"][a] / r.images_per_s
    total = sum(seconds.values())
    return {
        "experiment": str(cfg.name),
        "model": model,
        "device": device,
        "train_path": path,
        "splits": sizes,
        "splits_from": source,
        **work,
        "train_images_per_s": train,
        "train_step_images_per_s": step,
        "host_images_per_s_per_core": host[0] if host else None,
        "host_reads": host[1] if host else None,  # memory | lazy (dataset.in_memory's rule)
        "host_reads_why": host[2] if host else None,
        "threads": threads,
        "train_bound": "host data path" if train < step else "training step",
        "inference_images_per_s": infer,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_hours": round(total / 3600, 2),
        "note": "ignores cycle-0 auxiliary-head passes and process start-up; one process",
    }


def format_table(rows: list[SpeedRow]) -> str:
    """A plain-text table of the rows."""
    head = ["what", "model", "px", "device", "path", "images", "img/s", "vs", "ratio"]
    lines = [head]
    for r in rows:
        dev = f"cpu x{r.threads}" if r.device == "cpu" else r.device
        lines.append(
            [
                r.what,
                r.model.replace("hourglass_", ""),
                str(r.px),
                dev,
                r.path,
                str(r.images),
                f"{r.images_per_s:,.1f}" if r.images_per_s >= 10 else f"{r.images_per_s:.3g}",
                r.baseline or "-",
                f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            ]
        )
    return aligned(lines, left=2)


def format_estimate(est: dict) -> str:
    parts = ", ".join(f"{k} {v / 3600:.2f} h" for k, v in est["seconds"].items())
    return (
        f"experiment {est['experiment']}: {est['seeds']} seeds x {len(est['acquirers'])} acquirers, "
        f"budgets {est['budgets']}; {est['train_images']:,.0f} training images, "
        f"{est['inference_images']:,.0f} evaluated, {est['scored_images_per_acquirer']:,.0f} scored "
        f"per acquirer (splits: {est['splits_from']})\n"
        f"estimated wall time on {est['device']} ({est['model']}, {est['train_path']} path): "
        f"{est['total_hours']:.2f} h  [{parts}]" + _host_note(est)
    )


def _host_note(est: dict) -> str:
    host = est.get("host_images_per_s_per_core")
    if not host:
        return ""
    return (
        f"\ntraining at {est['train_images_per_s']:,.1f} img/s, bounded by the "
        f"{est['train_bound']} (step {est['train_step_images_per_s']:,.1f} img/s; host side "
        f"{host:,.0f} img/s per core x {est['threads']}, {est['host_reads']} reads: "
        f"{est['host_reads_why']})"
    )
