"""``alpose bench`` (no name): training, inference, acquisition and data-path speed, and the wall
time of a whole experiment (``alpose bench experiment=mpii_paper``).

Every figure is images per second measured here on a small synthetic pool with random weights:
training (``train.time_training``: fit's step incl. the data path), inference
(``evaluate.iterate_outputs``), acquisition per acquirer (``select`` on a pool with the context the
experiment builds; images/s = pool images / seconds), and the data path per CPU core (per-sample
albumentations vs the batch path). Each row names the row it replaces (the per-sample CPU path,
or the CPU for a GPU row) and the ratio of the two measured numbers. The experiment estimate counts
the images an experiment trains on, evaluates and scores (budgets, epochs, seeds, acquirers) and
multiplies by the measured per-image costs. Timings are only as good as the machine is idle: the
load average is printed and stored.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hourglass.errors import AlposeError
from hourglass.io import write_json

MODELS = {  # configs/model name -> (input px, configs/train name)
    "hourglass_small": (64, "cpu_small"),
    "hourglass_paper": (256, "paper"),
}
# Persons per split when an experiment's real cache is not prepared yet (marked "assumed"):
# Newell's MPII split (annot/train.h5, valid.h5) and LSP (1000 train + LSPET 10000, 1000 test).
ASSUMED_SPLITS = {
    "mpii": {"train": 22246, "val": 2958},
    "lsp": {"train": 11000, "test": 1000},
}


# Per-target gradient norms (~0.5 s per pool image for the small model on one loaded core):
# fewer pool images on the CPU; the figure is per image either way.
SLOW_ON_CPU = ("egl_pp", "egl_ensemble")
EGL_NEIGHBOURS = 30  # configs/acquirer/egl_pp.yaml's k: the pool holds enough labelled rows for it


@dataclass
class Sizes:
    """How much work one model's benchmark times on one device."""

    train_steps: int
    train_batch: int
    infer_images: int
    infer_batch: int
    pool: int
    labelled: int
    data_images: int


def default_sizes(px: int, device: str, quick: bool = False) -> Sizes:
    """Small on the CPU (the paper model: 2 batches of 4), larger on a GPU."""
    if quick:
        return Sizes(1, 4, 8, 4, 8, 8, 8)
    if device == "cuda":
        return Sizes(20, 32 if px <= 64 else 16, 1024, 128, 512, 256, 512)
    if px <= 64:
        return Sizes(3, 32, 128, 64, 48, 32, 128)
    return Sizes(2, 4, 8, 4, 4, 4, 16)


@dataclass
class SpeedRow:
    """One measurement, and the one it replaces (``baseline``; ``ratio`` = ours / baseline)."""

    what: str  # train | inference | data path | acquire <name>
    model: str
    px: int
    device: str  # cpu | cuda
    threads: int
    path: str  # sample | batch | -
    images: int
    seconds: float
    images_per_s: float
    baseline: str = ""
    baseline_images_per_s: float | None = None
    ratio: float | None = None

    @property
    def key(self) -> str:
        return f"{self.what}|{self.model}|{self.device}|{self.path}"


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Torch CPU threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose(config: str, overrides: list[str]):
    """A composed Hydra config of ``configs/<config>.yaml`` with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hourglass.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base=None):
            return hydra_compose(config, overrides=overrides)
    except Exception as exc:  # an unknown experiment or key: one line
        raise AlposeError(f"cannot compose {config} with {overrides}: {exc}") from exc
    finally:
        GlobalHydra.instance().clear()


def synthetic_pool(px: int, n: int, seed: int = 0):
    """A small synthetic :class:`PoseCache` of ``n`` training and 8 validation crops at ``px``."""
    from hourglass.datasets.registry import synthetic_identity
    from hourglass.datasets.synthetic_cache import build_synthetic_cache

    identity = synthetic_identity(
        {"name": "synthetic", "size": px, "seed": seed, "splits": {"train": n, "val": 8}}
    )
    return build_synthetic_cache(identity, workers=1, progress=False)


# Composed configs by model name; an experiment's own (model, train, dataset.size) replace the
# shipped ones in ``alpose bench experiment=NAME``.
EXPERIMENT_CONFIGS: dict[str, Any] = {}


@functools.cache
def _shipped_cfg(name: str):
    px, train = MODELS.get(name, (256, "paper"))
    return compose("train", [f"model={name}", f"train={train}", f"dataset.size={px}"])


def _train_cfg(name: str):
    return EXPERIMENT_CONFIGS.get(name) or _shipped_cfg(name)


def model_and_config(name: str, device: torch.device):
    """(a fresh model with random weights, its TrainConfig) for ``configs/model/<name>``."""
    from hourglass.train_cli import build_model, train_config

    cfg = _train_cfg(name)
    tcfg = replace(train_config(cfg), device=str(device))
    torch.manual_seed(0)
    return build_model(cfg.model, 16, int(cfg.dataset.size)), tcfg


def _row(what, model, px, device, path, images, seconds) -> SpeedRow:
    n = torch.get_num_threads() if device.type == "cpu" else 0
    ips = images / max(seconds, 1e-12)
    return SpeedRow(
        what, model, px, device.type, n, path, images, round(seconds, 6), float(f"{ips:.4g}")
    )


def bench_train(name, data, device, sizes, path) -> SpeedRow:
    """fit's training step on ``device`` with the ``path`` data path."""
    from hourglass.train import time_training

    model, cfg = model_and_config(name, device)
    cfg = replace(cfg, batch_size=sizes.train_batch, augment=replace(cfg.augment, path=path))
    warmup = 0 if device.type == "cpu" and data.image_size > 64 else 1  # seconds per step anyway
    ips = time_training(model, data, data.indices("train"), cfg, sizes.train_steps, warmup)
    images = sizes.train_steps * sizes.train_batch
    return _row("train", name, data.image_size, device, path, images, images / ips)


def bench_inference(name, data, device, sizes) -> SpeedRow:
    """Batched evaluation forward passes (``iterate_outputs``, no flip)."""
    from hourglass.evaluate import iterate_outputs

    model, _ = model_and_config(name, device)
    model.to(device).eval()
    idx = np.resize(data.indices("train"), sizes.infer_images)
    warm = idx[: sizes.infer_batch]
    for _ in iterate_outputs(model, data, warm, batch_size=sizes.infer_batch, device=device):
        pass
    _sync(device)
    t0 = time.perf_counter()
    for _ in iterate_outputs(model, data, idx, batch_size=sizes.infer_batch, device=device):
        pass
    _sync(device)
    return _row("inference", name, data.image_size, device, "-", len(idx), time.perf_counter() - t0)


def bench_data_path(data, device, sizes, path, model: str) -> SpeedRow:
    """Augmented model-input batches per second (CPU rows on one thread: per core)."""
    from hourglass.augment import PoseAugmenter
    from hourglass.augment_batch import BatchAugmenter, device_batch
    from hourglass.datasets.views import model_batch
    from hourglass.evaluate import images_to_tensor

    cfg = model_and_config(model, device)[1].augment
    batch = 32
    idx = np.resize(data.indices("train"), sizes.data_images)
    aug = BatchAugmenter(cfg) if path == "batch" else PoseAugmenter(cfg)
    aug.reseed(0)

    def one(rows):
        if path == "batch":
            return device_batch(data, rows, aug, device)[0]
        return images_to_tensor(model_batch(data, rows, aug)[0], device)

    one(idx[:batch])
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(idx), batch):
        one(idx[s : s + batch])
    _sync(device)
    return _row(
        "data path", model, data.image_size, device, path, len(idx), time.perf_counter() - t0
    )


def acquisition_context(model, data, labelled, unlabelled, device, tcfg, aux=None):
    """The context ``Experiment.acquire`` builds (standard protocol, no progress bar)."""
    from active.acquirers.base import AcquisitionContext

    rng = np.random.default_rng([0, 17, 1])
    return AcquisitionContext.for_training(
        model.eval(), data, labelled, unlabelled, rng, device, tcfg, aux
    )


def bench_acquirer(acq_name, name, data, device, sizes) -> SpeedRow:
    """``select`` over a pool of ``sizes.pool`` images with ``sizes.labelled`` labelled ones."""
    from active.acquirers.registry import build_acquirer

    acquirer = build_acquirer(acq_name)
    model, tcfg = model_and_config(name, device)
    rows = data.indices("train")
    if device.type == "cpu" and acq_name in SLOW_ON_CPU:
        sizes = replace(sizes, pool=min(sizes.pool, 8 if data.image_size <= 64 else 2))
    neighbours = int(getattr(acquirer, "k", 0) or 0)  # EGL++: every pool image gets its k targets
    if sizes.labelled < neighbours:
        sizes = replace(sizes, labelled=min(neighbours, len(rows) - sizes.pool))
    labelled, pool = rows[: sizes.labelled], rows[sizes.labelled : sizes.labelled + sizes.pool]
    aux = None
    if callable(getattr(acquirer, "auxiliary_head", None)):
        torch.manual_seed(29)
        aux = acquirer.auxiliary_head(model, data, "standard").module.to(device).eval()
    k = max(1, len(pool) // 4)
    ctx = acquisition_context(model, data, labelled, pool, device, tcfg, aux)
    _sync(device)
    t0 = time.perf_counter()
    acquirer.select(ctx, k)
    _sync(device)
    return _row(
        f"acquire {acq_name}",
        name,
        data.image_size,
        device,
        "-",
        len(pool),
        time.perf_counter() - t0,
    )


def link_baselines(rows: list[SpeedRow]) -> None:
    """Name each row's baseline (the per-sample CPU path, or the CPU row of a GPU row) and set
    ``ratio`` = images/s over the baseline's images/s (both measured)."""
    by_key = {r.key: r for r in rows}
    for r in rows:
        if r.what in ("train", "data path"):
            base = f"{r.what}|{r.model}|cpu|sample"
        else:
            base = f"{r.what}|{r.model}|cpu|{r.path}"
        if base == r.key or base not in by_key:
            continue
        b = by_key[base]
        r.baseline = f"{b.what} {b.device} {b.path}".replace(" -", "")
        r.baseline_images_per_s = b.images_per_s
        r.ratio = round(r.images_per_s / b.images_per_s, 2) if b.images_per_s > 0 else None


class _Rows(list):
    """A list that logs every row appended (progress on a slow machine)."""

    def __init__(self, log) -> None:
        super().__init__()
        self.log = log

    def append(self, row: SpeedRow) -> None:
        super().append(row)
        self.log(f"    {row.what} ({row.device}, {row.path}): {row.images_per_s:,.1f} img/s")


def run_model(name, devices, acquirers, cpu_threads, quick=False, log=print) -> list[SpeedRow]:
    """Every row of one model on every device (CPU first: the GPU rows' baselines)."""
    px = int(_train_cfg(name).dataset.size)
    rows = _Rows(log)
    for device in devices:
        sizes = default_sizes(px, device.type, quick)
        data = synthetic_pool(px, max(sizes.pool + sizes.labelled, EGL_NEIGHBOURS + 2) + 8)
        log(f"  {name} on {device.type} ...")
        if device.type == "cpu":
            with threads(1):  # per core
                rows.append(bench_data_path(data, device, sizes, "sample", name))
                rows.append(bench_data_path(data, device, sizes, "batch", name))
            with threads(cpu_threads):
                rows.append(bench_train(name, data, device, sizes, "sample"))
                rows.append(bench_train(name, data, device, sizes, "batch"))
                rows.append(bench_inference(name, data, device, sizes))
                for a in acquirers:
                    rows.append(bench_acquirer(a, name, data, device, sizes))
        else:  # the GPU rows
            rows.append(bench_data_path(data, device, sizes, "batch", name))
            rows.append(bench_train(name, data, device, sizes, "batch"))
            rows.append(bench_inference(name, data, device, sizes))
            for a in acquirers:
                rows.append(bench_acquirer(a, name, data, device, sizes))
    return list(rows)


# -- the whole-experiment estimate ------------------------------------------------------------
def split_sizes(cfg) -> tuple[dict[str, int], str]:
    """Persons per split of an experiment's dataset: config (synthetic), the prepared cache, or
    the assumed published counts; and where they came from."""
    from hourglass.datasets.registry import cache_path

    if cfg.dataset.name == "synthetic":
        return {k: int(v) for k, v in cfg.dataset.splits.items()}, "config"
    try:
        path = cache_path(cfg.dataset, cfg.paths.data)
    except Exception:  # noqa: BLE001 - an unprepared or unknown cache: fall back below
        path = None
    if path is not None and Path(path).is_file():
        import h5py

        from hourglass.datasets.cache import SPLIT_NAMES

        with h5py.File(path, "r") as f:
            counts = np.bincount(f["split"][()], minlength=len(SPLIT_NAMES))
        return {n: int(c) for n, c in zip(SPLIT_NAMES, counts, strict=False)}, str(path)
    family = "lsp" if cfg.dataset.name.startswith("lsp") else cfg.dataset.name
    if family in ASSUMED_SPLITS:
        return dict(ASSUMED_SPLITS[family]), "assumed (no cache prepared)"
    raise AlposeError(
        f"no split sizes for dataset {cfg.dataset.name}: prepare it first (`alpose prepare ...`)"
    )


def work_of(cfg, sizes: dict[str, int]) -> dict[str, Any]:
    """Images trained, evaluated and scored by a whole experiment (all seeds and acquirers)."""
    from active.layout import budget_schedule
    from active.workload import acquirer_subsample, cycle_work, scored_images

    budgets = budget_schedule(cfg.budgets, cfg.initial, cfg.per_cycle, cfg.cycles)
    seeds, acquirers = len(cfg.seeds), list(cfg.acquirers)
    p = cfg.protocol
    holdout = p.selection == "holdout"
    fraction = 1.0 - float(p.holdout_fraction) if holdout else 1.0
    report = sizes.get(str(p.report_split), 0)
    select_split = 0 if holdout else sizes.get(str(p.selection), 0)
    pool = sizes.get("train", 0)

    train0, infer0 = cycle_work(budgets[0], int(cfg.epochs_first), fraction, select_split, report)
    train, infer = seeds * train0, seeds * infer0
    for b in budgets[1:]:
        t, i = cycle_work(b, int(cfg.epochs_later), fraction, select_split, report)
        train += seeds * len(acquirers) * t
        infer += seeds * len(acquirers) * i

    def scored(sub: int | None) -> int:
        return seeds * sum(scored_images(pool, b, sub) for b in budgets[:-1])

    return {
        "budgets": budgets,
        "seeds": seeds,
        "acquirers": acquirers,
        "train_images": train,
        "inference_images": infer,
        "scored_images_per_acquirer": scored(cfg.get("pool_subsample")),
        "scored_images": {a: scored(acquirer_subsample(cfg, a)) for a in acquirers},
    }


def estimate(cfg, rows: list[SpeedRow], device: str, sizes: dict[str, int], source: str) -> dict:
    """Wall time of the experiment from the measured per-image costs on ``device``."""
    model = str(cfg.model.name)
    work = work_of(cfg, sizes)
    path = "batch" if device == "cuda" else str(cfg.train.augment.get("path", "sample"))
    find = {r.key: r for r in rows}
    train = find[f"train|{model}|{device}|{path}"].images_per_s
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
        "inference_images_per_s": infer,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_hours": round(total / 3600, 2),
        "note": "ignores cycle-0 auxiliary-head passes and process start-up; one process",
    }


# -- output -----------------------------------------------------------------------------------
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
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    )


def format_estimate(est: dict) -> str:
    parts = ", ".join(f"{k} {v / 3600:.2f} h" for k, v in est["seconds"].items())
    return (
        f"experiment {est['experiment']}: {est['seeds']} seeds x {len(est['acquirers'])} acquirers, "
        f"budgets {est['budgets']}; {est['train_images']:,.0f} training images, "
        f"{est['inference_images']:,.0f} evaluated, {est['scored_images_per_acquirer']:,.0f} scored "
        f"per acquirer (splits: {est['splits_from']})\n"
        f"estimated wall time on {est['device']} ({est['model']}, {est['train_path']} path): "
        f"{est['total_hours']:.2f} h  [{parts}]"
    )


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
        from omegaconf import open_dict

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
        f"alpose bench: models {models}, devices {[d.type for d in devices]}, CPU threads {cpu_threads}"
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
    link_baselines(rows)
    print(format_table(rows))
    load_after = os.getloadavg()[0]
    print(
        f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores; "
        "data path rows use one thread (per core); ratio = img/s over the 'vs' row's img/s"
    )
    payload: dict[str, Any] = {
        "bench": "speed",
        "cpu_threads": cpu_threads,
        "cores": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "rows": [asdict(r) for r in rows],
    }
    if cfg is not None:
        sizes, source = split_sizes(cfg)
        ests = [estimate(cfg, rows, d.type, sizes, source) for d in devices]
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
    from active.acquirers.registry import known_acquirers

    names = known_acquirers()
    if quick:
        return ["random", "coreset"]
    if model == "hourglass_small" or torch.cuda.is_available():
        return names
    return [n for n in names if n in ("random", "coreset", "multipeak", "learning_loss")]


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
    p.add_argument("--json", default=None, metavar="OUT", help="also write the rows as JSON")
