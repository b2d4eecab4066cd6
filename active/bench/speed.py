"""``alpose bench`` (no name): training, inference, acquisition and data-path speed, and the wall
time of a whole experiment (``alpose bench experiment=mpii_paper``).

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

from active.bench.text_table import aligned
from hourglass import numerics
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
    from hourglass.factories import build_model, train_config

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


# -- the real data path: an MPII-size cache of stored windows ---------------------------------
STORE_SIDE = 293  # configs/dataset/mpii.yaml store_size: the stored window side
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
    import h5py

    from hourglass.datasets import crops
    from hourglass.datasets.cache import image_filters, write_fields
    from hourglass.datasets.real_cache import finish_cache
    from hourglass.datasets.records import PersonTable
    from hourglass.datasets.synthetic import SyntheticConfig, render_split
    from hourglass.io import atomic_path
    from hourglass.joints import MPII_JOINTS

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
    from hourglass.datasets.cache import open_for_reading

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
    from hourglass.datasets.cache import LazyImages, gather_rows, open_for_reading

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
    from hourglass.augment_batch import BatchAugmenter
    from hourglass.datasets import crops
    from hourglass.datasets.cache import gather_rows
    from hourglass.datasets.views import cut_plan, target_joints
    from hourglass.factories import train_config

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
    from hourglass.datasets.cache import load_cache

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
        from hourglass.datasets.cache import SPLIT_NAMES, open_for_reading

        with open_for_reading(path) as f:
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
    from active.loop.run_files import budget_schedule
    from active.loop.workload import acquirer_subsample, cycle_work, scored_images

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


def train_path(cfg, device: str) -> str:
    """The bench row's augmentation path of a run on ``device``: ``batch`` on CUDA; on the CPU
    ``train.augment.path`` (``auto`` = ``sample`` there)."""
    if device == "cuda":
        return "batch"
    path = str(cfg.train.augment.get("path", "sample"))
    return "sample" if path == "auto" else path


def host_side(cfg, rows: list[dict], sizes: dict[str, int]) -> tuple[float, str, str] | None:
    """(host-side images/s per core of a training step, ``lazy`` or ``memory``, why) for an
    experiment on a real (margin) dataset, from the bench's ``host step`` rows: the in-memory row
    when ``dataset.in_memory`` (null: the memory rule of ``cache.memory_choice`` on this machine)
    keeps the images in RAM, else the lazy row. None for the synthetic set or without the rows."""
    from hourglass.datasets.cache import memory_choice

    if str(cfg.dataset.name) == "synthetic":
        return None
    side = int(cfg.dataset.get("store_size") or STORE_SIDE)
    nbytes = sum(int(v) for v in sizes.values()) * side * side * 3
    setting = cfg.dataset.get("in_memory")
    keep, why = memory_choice(nbytes, None if setting is None else bool(setting))
    path = "memory" if keep else "lazy"
    for r in rows:
        if r.get("what") == "host step" and r.get("path") == path and r.get("images_per_s"):
            return float(r["images_per_s"]), path, why
    return None


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
    from active.loop.workload import train_rate

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
        from active.bench.numerics import format_rows as numerics_table
        from active.bench.numerics import measure

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
