"""Real photos into the crop cache: decode in parallel, cut stored windows, write, report.

Each person's stored window (``crops.py``) is cut by worker processes (OpenCV, one thread each)
and appended to the HDF5 file as it arrives, so memory stays flat however large the set. A
missing or unreadable photo is counted, listed in ``<cache>.report.txt`` beside the cache and
skipped; above ``max_bad_fraction`` of the photos the build fails and writes no cache. The cache
records a hash of its sources (annotation bytes, every photo's name, size and mtime) and settings,
so ``prepare`` on an up-to-date cache does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm.auto import tqdm

from hourglass.datasets import crops
from hourglass.datasets.cache import (
    PoseCache,
    create_image_dataset,
    open_for_reading,
    write_fields,
)
from hourglass.datasets.records import PersonTable
from hourglass.errors import AlposeError
from hourglass.io import atomic_path

APPEND = 64  # rows written per HDF5 append
SMALL = 300  # fewer persons than this: decode in-process (starting workers costs more)


@dataclass
class BuildReport:
    """Outcome of one build: persons written, photos that could not be read, time."""

    path: Path
    persons: int
    photos: int
    bad: list[tuple[str, str]]
    seconds: float
    counts: dict


def source_hash(annotations: list[Path], image_dirs: list[Path], settings: dict) -> str:
    """sha1 of the settings, the annotation files' bytes and every photo's (name, size, mtime)."""
    h = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in annotations:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for folder in image_dirs:
        entries = sorted(
            (e.name, e.stat().st_size, e.stat().st_mtime_ns)
            for e in os.scandir(folder)
            if e.is_file()
        )
        h.update(json.dumps(entries).encode())
    return h.hexdigest()


def stored_hash(path: Path) -> str | None:
    """The ``source_hash`` a cache was built from (None if absent or unreadable)."""
    try:
        with open_for_reading(path) as f:
            return json.loads(f.attrs.get("provenance", "{}")).get("source_hash")
    except OSError:
        return None


def report_path(cache: Path) -> Path:
    return cache.with_name(cache.stem + ".report.txt")


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _cut_one(task: tuple[str, np.ndarray, int]) -> tuple[np.ndarray | None, tuple[int, int], str]:
    """(stored window or None, (width, height), problem) for one photo."""
    path, image_to_stored, side = task
    if not os.path.isfile(path):
        return None, (0, 0), "missing"
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.size == 0:
        return None, (0, 0), "unreadable"
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    return crops.cut_stored(image, image_to_stored, side), (w, h), ""


def build_real_cache(
    table: PersonTable,
    root: Path,
    path: Path,
    spec: crops.CropSpec,
    *,
    provenance: dict,
    workers: int = 2,
    max_bad_fraction: float = 0.01,
    progress: bool = True,
) -> BuildReport:
    """Cut every person of ``table`` (photos under ``root``) into the cache at ``path``."""
    t0 = time.perf_counter()
    present = table.visibility >= 0
    usable = present.sum(1) >= 2
    table = table.take(usable)
    present = present[usable]
    window = crops.joint_window(table.joints, present)
    to_stored = crops.store_affine(window, spec)
    paths = [str(Path(root) / name) for name in table.image]
    tasks = [(p, to_stored[i], spec.store_size) for i, p in enumerate(paths)]
    image_wh = np.zeros((len(table), 2), np.int32)
    ok = np.zeros(len(table), bool)
    bad: dict[str, str] = {}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        images = create_image_dataset(f, spec.store_size)
        buffer: list[np.ndarray] = []

        def flush() -> None:
            if buffer:
                start = images.shape[0]
                images.resize(start + len(buffer), axis=0)
                images[start:] = np.stack(buffer)
                buffer.clear()

        bar = tqdm(
            total=len(tasks), desc=f"prepare {table.dataset}", unit="person", disable=not progress
        )
        if workers > 1 and len(tasks) >= SMALL:
            # spawn, not fork: a fork after torch/OpenMP threads ran can deadlock the workers
            pool = ProcessPoolExecutor(workers, get_context("spawn"), initializer=_init_worker)
            results = pool.map(_cut_one, tasks, chunksize=16)
        else:
            pool, results = None, map(_cut_one, tasks)
        try:
            for i, (crop, wh, problem) in enumerate(results):
                bar.update(1)
                if crop is None:
                    bad[paths[i]] = problem
                    continue
                ok[i], image_wh[i] = True, wh
                buffer.append(crop)
                if len(buffer) >= APPEND:
                    flush()
            flush()
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        photos = len(set(paths))
        fraction = len(bad) / max(photos, 1)
        _write_report(report_path(path), bad, photos)
        if fraction > max_bad_fraction:
            raise AlposeError(
                f"{len(bad)} of {photos} photos ({100 * fraction:.1f} %) are missing or unreadable, "
                f"more than the allowed {100 * max_bad_fraction:.1f} %; they are listed in "
                f"{report_path(path)} (fix the folder, or raise dataset.max_bad_fraction)"
            )
        kept = table.take(ok)
        cache = finish_cache(kept, window[ok], image_wh[ok], spec, provenance)
        write_fields(f, cache)
        counts = {name: int((kept.split == i).sum()) for i, name in enumerate(cache.split_names)}
    return BuildReport(
        path, len(kept), photos, sorted(bad.items()), time.perf_counter() - t0, counts
    )


def finish_cache(
    table: PersonTable,
    window: np.ndarray,
    image_wh: np.ndarray,
    spec: crops.CropSpec,
    provenance: dict,
) -> PoseCache:
    """Cache fields (no images) of persons whose photos were read: eval-crop joints and maps."""
    to_crop, _ = crops.crop_affine(window, image_wh, spec.eval_scale, spec.size)
    joints = crops.apply(to_crop, table.joints).astype(np.float32)
    joints[table.visibility < 0] = 0.0
    return PoseCache(
        images=np.zeros((len(table), 1, 1, 3), np.uint8),
        joints=joints,
        visibility=table.visibility.astype(np.int8),
        normaliser=(table.normaliser * to_crop[:, 0, 0]).astype(np.float32),
        split=table.split.astype(np.uint8),
        dataset=table.dataset,
        joint_names=table.joint_names,
        crop_to_image=crops.invert(to_crop).astype(np.float32),
        source_index=table.source_index,
        family=table.family,
        family_names=table.family_names,
        normaliser_kind=table.normaliser_kind,
        provenance={**provenance, "reader": table.info},
        stored_to_image=crops.invert(crops.store_affine(window, spec)).astype(np.float32),
        window=window.astype(np.float32),
        image_wh=image_wh.astype(np.int32),
        crop=spec.as_dict(),
        input_size=spec.size,
    )


def _write_report(path: Path, bad: dict[str, str], photos: int) -> None:
    with atomic_path(path) as tmp:
        lines = [f"{len(bad)} of {photos} photos could not be used (skipped)"]
        lines += [f"{problem}\t{name}" for name, problem in sorted(bad.items())]
        tmp.write_text("\n".join(lines) + "\n")
