"""Speed rows of ``alpose bench``: training, inference, acquisition and data-path images per second
(the report and the whole-experiment estimate: :mod:`active.bench.speed_report`).

Every figure is images per second measured here on a small synthetic pool with random weights:
training (``train.time_training``: fit's step incl. the data path), inference
(``evaluate.iterate_outputs``), acquisition per acquirer (``select`` on a pool with the context the
experiment builds; images/s = pool images / seconds), and the data path per CPU core (per-sample
albumentations vs the batch path). The real data path is timed on an MPII-size format-2 cache
the bench builds once and reuses (``--data-rows``, default 17,000 stored 293 px windows = 4.4 GB,
one chunk per row stored as caches are written (``--data-compression``), cut from synthetic photos): ``cache read`` rows/s of random batches of 16
(per-row lazy reads, the in-memory array, and the old h5py fancy-indexed read) and ``host step``,
the host side of one paper-size training step (cut plan + rows into a pinned buffer; the warp
runs on the device), both on one core. Each row names the row it replaces (the per-sample CPU
path, the CPU for a GPU row, the fancy read for a cache read) and the ratio of the two measured
numbers. The experiment estimate counts the images an experiment trains on, evaluates and scores
(budgets, epochs, seeds, acquirers) and multiplies by the measured per-image costs; on a real
dataset training is no faster than the host step allows. Timings are only as good as the
machine is idle: the load average is printed and stored.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from active.acquirers.base import AcquisitionContext
from active.acquirers.registry import build_acquirer
from active.loop.workload import STORE_SIDE
from hourglass.augment import PoseAugmenter
from hourglass.augment_batch import BatchAugmenter, device_batch
from hourglass.config import config_dir
from hourglass.datasets import crops
from hourglass.datasets.cache import (
    LazyImages,
    gather_rows,
    image_filters,
    load_cache,
    open_for_reading,
    write_fields,
)
from hourglass.datasets.real_cache import finish_cache
from hourglass.datasets.records import PersonTable
from hourglass.datasets.registry import synthetic_identity
from hourglass.datasets.synthetic import SyntheticConfig, render_split
from hourglass.datasets.synthetic_cache import build_synthetic_cache
from hourglass.datasets.views import cut_plan, model_batch, target_joints
from hourglass.errors import AlposeError
from hourglass.evaluate import images_to_tensor, iterate_outputs
from hourglass.factories import build_model, train_config
from hourglass.io import atomic_path
from hourglass.joints import MPII_JOINTS
from hourglass.train import time_training

MODELS = {  # configs/model name -> (input px, configs/train name)
    "hourglass_small": (64, "cpu_small"),
    "hourglass_paper": (256, "paper"),
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
    model, cfg = model_and_config(name, device)
    cfg = replace(cfg, batch_size=sizes.train_batch, augment=replace(cfg.augment, path=path))
    warmup = 0 if device.type == "cpu" and data.image_size > 64 else 1  # seconds per step anyway
    ips = time_training(model, data, data.indices("train"), cfg, sizes.train_steps, warmup)
    images = sizes.train_steps * sizes.train_batch
    return _row("train", name, data.image_size, device, path, images, images / ips)


def bench_inference(name, data, device, sizes) -> SpeedRow:
    """Batched evaluation forward passes (``iterate_outputs``, no flip)."""
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


# -- the real data path: an MPII-size cache of stored windows ---------------------------------
INPUT_SIDE = 256  # the paper model's input
PHOTO_SIDE = 512  # synthetic "photos" the stored windows are cut from
# The person's extent as a fraction of the photo: its 2 x extent stored window lies mostly inside
# the photo (little black margin, as for most MPII persons), cut at a zoom of ~0.7.
PHOTO_EXTENT = (0.35, 0.5)
DATA_ROWS = 17_000  # full bench: 17,000 x 293 x 293 x 3 = 4.38 GB of images (MPII: ~25k persons)
QUICK_DATA_ROWS = 96
DISTINCT = 300  # distinct rendered persons, repeated to the cache's rows (rendering is ~12 ms each)
QUICK_DISTINCT = 8
READ_BATCH = 16  # configs/train/paper.yaml batch_size
MARGIN_CACHE_VERSION = 2  # bump when the bench cache's contents change (the file name carries it)


def default_data_cache() -> Path:
    """Where the bench keeps its margin cache between runs (``$XDG_CACHE_HOME/alpose/bench``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "alpose" / "bench"


def margin_cache_path(folder: Path, rows: int, distinct: int, compression: str) -> Path:
    """The bench cache's file, named by everything that determines its bytes."""
    name = f"bench-margin-{STORE_SIDE}px-{rows}rows-{distinct}persons-{compression}"
    return Path(folder) / f"{name}-v{MARGIN_CACHE_VERSION}.h5"


def build_margin_cache(
    path: Path, rows: int, distinct: int, compression: str = "checksum", seed: int = 0
) -> Path:
    """Write a format-2 cache of ``rows`` persons as ``alpose prepare mpii`` would: synthetic
    photos (PHOTO_SIDE px) cut into 293 px stored windows (``crops.cut_stored``) and the crop
    fields of ``real_cache.finish_cache``; ``distinct`` rendered persons repeat to fill the rows
    (their compressed chunks copied as they are). Images (rows, 293, 293, 3) uint8, one chunk per
    row, stored as ``compression`` (``cache.IMAGE_STORAGE``: checksum as caches are written now,
    lzf as older versions wrote them, or none)."""
    distinct = max(1, min(distinct, rows))
    lo, hi = PHOTO_EXTENT
    gen = SyntheticConfig(size=PHOTO_SIDE, extent_min=lo, extent_max=hi)
    photos = render_split("train", distinct, seed, gen)
    present = photos.visibility >= 0
    present[present.sum(1) < 2] = True  # a window needs two points
    window = crops.joint_window(photos.joints, present)
    spec = crops.CropSpec(size=INPUT_SIDE, store_size=STORE_SIDE)
    to_stored = crops.store_affine(window, spec)
    stored = np.stack(
        [crops.cut_stored(photos.images[i], to_stored[i], STORE_SIDE) for i in range(distinct)]
    )
    boxes = photos.head_boxes
    table = PersonTable(
        image=[f"synthetic/{i:05d}.png" for i in range(distinct)],
        joints=photos.joints.astype(np.float64),
        visibility=photos.visibility,
        normaliser=np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]),
        split=np.zeros(distinct, np.uint8),
        source_index=np.arange(distinct),
        dataset="mpii",
        joint_names=MPII_JOINTS,
        normaliser_kind="head_diagonal",
        info={"bench": "alpose bench margin cache"},
    )
    source = np.arange(rows) % distinct
    table = table.take(source)
    table.split = np.where(np.arange(rows) % 9 == 8, 1, 0).astype(np.uint8)  # ~11 % val (MPII)
    image_wh = np.full((rows, 2), PHOTO_SIDE, np.int32)
    provenance = {"bench_version": MARGIN_CACHE_VERSION, "rows": rows, "distinct": distinct}
    fields = finish_cache(table, window[source], image_wh, spec, provenance)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset(
            "images",
            shape=(rows, STORE_SIDE, STORE_SIDE, 3),
            dtype=np.uint8,
            chunks=(1, STORE_SIDE, STORE_SIDE, 3),
            **image_filters(compression),
        )
        ds[:distinct] = stored
        f.flush()
        chunks = [ds.id.read_direct_chunk((i, 0, 0, 0)) for i in range(distinct)]
        for r in range(distinct, rows):
            mask, data = chunks[r % distinct]
            ds.id.write_direct_chunk((r, 0, 0, 0), data, mask)
        write_fields(f, fields)
    return path


def margin_cache(
    folder: Path, rows: int, distinct: int, compression: str, log=print
) -> tuple[Path, float | None]:
    """(the bench cache, seconds it took to build; None when an existing one was reused)."""
    path = margin_cache_path(folder, rows, distinct, compression)
    if path.is_file():
        try:
            with open_for_reading(path) as f:
                if f["images"].shape[0] == rows and "window" in f:
                    return path, None
        except (OSError, KeyError):
            pass  # unreadable: build it again
    gb = rows * STORE_SIDE * STORE_SIDE * 3 / 1e9
    log(f"  building the bench cache {path} ({rows} rows, {gb:.2f} GB of images) ...")
    t0 = time.perf_counter()
    build_margin_cache(path, rows, distinct, compression)
    return path, time.perf_counter() - t0


def _time_batches(read, n: int, batches: int, seed: int = 0) -> tuple[int, float]:
    """(rows, seconds) of ``batches`` reads of READ_BATCH random rows (one warm-up read first)."""
    rng = np.random.default_rng(seed)
    read(rng.integers(0, n, READ_BATCH))
    draws = [rng.integers(0, n, READ_BATCH) for _ in range(batches)]
    t0 = time.perf_counter()
    for idx in draws:
        read(idx)
    return batches * READ_BATCH, time.perf_counter() - t0


def _fancy_read(ds, idx: np.ndarray) -> np.ndarray:
    """The old lazy read: one h5py fancy-indexed read of the sorted unique rows, reordered."""
    unique, inverse = np.unique(idx, return_inverse=True)
    return ds[unique][inverse]


def bench_cache_reads(path: Path, images: np.ndarray, batches: int) -> list[SpeedRow]:
    """Rows/s of random batches of 16 rows: per-row lazy reads (``LazyImages.read_into``), the
    in-memory array (``images``) and the old fancy-indexed read, each into one output buffer."""
    cpu = torch.device("cpu")
    lazy = LazyImages(path)
    plain = open_for_reading(path)["images"]
    n = len(lazy)
    out = np.empty((READ_BATCH, *lazy.shape[1:]), np.uint8)
    rows = []
    k, sec = _time_batches(lambda idx: lazy.read_into(idx, out), n, batches)
    rows.append(_row("cache read", "hourglass_paper", STORE_SIDE, cpu, "lazy", k, sec))
    k, sec = _time_batches(lambda idx: gather_rows(images, idx, out), n, 20 * batches)
    rows.append(_row("cache read", "hourglass_paper", STORE_SIDE, cpu, "memory", k, sec))
    k, sec = _time_batches(lambda idx: _fancy_read(plain, idx), n, max(1, batches // 50))
    rows.append(_row("cache read", "hourglass_paper", STORE_SIDE, cpu, "fancy", k, sec))
    return rows


def bench_host_step(data, steps: int, path: str, seed: int = 0) -> SpeedRow:
    """The host side of one paper-size training step (batch 16) on a margin cache: the cut plan
    (``views.cut_plan``: scale, flip and jitter draws, affine maps, joints), the rows read into
    one pinned buffer (plain memory on a CPU-only torch), the warp's output-to-stored maps and
    the targets' head-top pull. The warp, flip and heatmaps run on the device and are not counted."""
    aug = BatchAugmenter(train_config(_train_cfg("hourglass_paper")).augment)
    aug.reseed(seed)
    shape = (READ_BATCH, *data.images.shape[1:])
    buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=torch.cuda.is_available())
    out = buffer.numpy()

    def step(idx: np.ndarray) -> tuple:
        to_out, box, joints, vis = cut_plan(data, idx, aug)
        images = gather_rows(data.images, idx, out)
        out_to_image = crops.invert(to_out)  # the warp's maps (views.window_maps), float32
        stored_to_image = data.stored_to_image[idx].astype(np.float64)
        out_to_stored = crops.compose(crops.invert(stored_to_image), out_to_image)
        maps = [m.astype(np.float32) for m in (out_to_image, out_to_stored, box)]
        return images, maps, target_joints(data, joints, vis), vis >= 0

    rng = np.random.default_rng(seed)
    train = data.indices("train")
    step(rng.choice(train, READ_BATCH))
    draws = [rng.choice(train, READ_BATCH) for _ in range(steps)]
    t0 = time.perf_counter()
    for idx in draws:
        step(idx)
    seconds = time.perf_counter() - t0
    cpu = torch.device("cpu")
    return _row("host step", "hourglass_paper", INPUT_SIDE, cpu, path, steps * READ_BATCH, seconds)


def run_data_path(
    folder: Path, rows: int, compression: str, quick: bool = False, log=print
) -> tuple[list[SpeedRow], dict[str, Any]]:
    """The data-path rows on the bench's MPII-size margin cache (built or reused), one thread;
    and a description of the cache for the JSON."""
    distinct = QUICK_DISTINCT if quick else DISTINCT
    path, built = margin_cache(folder, rows, distinct, compression, log)
    log(f"  data path on {path.name} ...")
    out = _Rows(log)
    with threads(1):
        lazy = load_cache(path, in_memory=False)
        lazy.target_head_pull = 0.8  # the paper's training targets
        t0 = time.perf_counter()
        ram = load_cache(path, in_memory=True)
        load_s = time.perf_counter() - t0
        ram.target_head_pull = 0.8
        for r in bench_cache_reads(path, ram.images, 3 if quick else 200):
            out.append(r)
        out.append(bench_host_step(lazy, 3 if quick else 100, "lazy"))
        out.append(bench_host_step(ram, 5 if quick else 1000, "memory"))
    info = {
        "path": str(path),
        "rows": rows,
        "distinct_persons": distinct,
        "store_side": STORE_SIDE,
        "compression": compression,
        "image_gb": round(ram.images.nbytes / 1e9, 3),
        "file_gb": round(path.stat().st_size / 1e9, 3),
        "build_seconds": None if built is None else round(built, 1),
        "in_memory_load_seconds": round(load_s, 2),
    }
    return list(out), info


def acquisition_context(model, data, labelled, unlabelled, device, tcfg, aux=None):
    """The context ``Experiment.acquire`` builds (standard protocol, no progress bar)."""
    rng = np.random.default_rng([0, 17, 1])
    return AcquisitionContext.for_training(
        model.eval(), data, labelled, unlabelled, rng, device, tcfg, aux
    )


def bench_acquirer(acq_name, name, data, device, sizes) -> SpeedRow:
    """``select`` over a pool of ``sizes.pool`` images with ``sizes.labelled`` labelled ones."""
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
    """Name each row's baseline (the per-sample CPU path, or the CPU row of a GPU row; a cache
    read: the fancy-indexed read; a host step: the per-sample CPU path) and set ``ratio`` =
    images/s over the baseline's images/s (both measured)."""
    by_key = {r.key: r for r in rows}
    for r in rows:
        if r.what in ("train", "data path"):
            base = f"{r.what}|{r.model}|cpu|sample"
        elif r.what == "cache read":  # the old fancy-indexed lazy read
            base = f"cache read|{r.model}|cpu|fancy"
        elif r.what == "host step":  # the per-sample CPU warp
            base = f"data path|{r.model}|cpu|sample"
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
# -- output -----------------------------------------------------------------------------------
