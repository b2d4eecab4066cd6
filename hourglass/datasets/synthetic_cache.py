"""Render the synthetic pose set's splits into a :class:`PoseCache`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hourglass.datasets.cache import SPLIT_NAMES, PoseCache, available_memory, write_cache
from hourglass.datasets.registry import synthetic_identity
from hourglass.datasets.synthetic import SyntheticConfig, render_split
from hourglass.errors import AlposeError
from hourglass.joints import MPII_JOINTS

CHUNK = 1000  # images per progress-bar step
# While the rendered chunks are joined into one array both copies are held: twice the images.
PEAK_COPIES = 2


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"


def image_bytes(identity: dict[str, Any]) -> dict[str, int]:
    """Bytes of each split's images (persons x size² x 3, uint8 RGB)."""
    side = int(identity["size"])
    return {split: int(n) * side * side * 3 for split, n in identity["splits"].items()}


def memory_estimate(identity: dict[str, Any]) -> tuple[int, str]:
    """(peak bytes of rendering ``identity``, the estimate in words: per split and in all)."""
    per_split = image_bytes(identity)
    side = int(identity["size"])
    parts = ", ".join(
        f"{split} {n:,} x {side}² px x 3 bytes = {_size(per_split[split])}"
        for split, n in identity["splits"].items()
        if n
    )
    peak = PEAK_COPIES * sum(per_split.values())
    return peak, f"about {_size(peak)} of memory (images: {parts}; held twice while joined)"


def check_memory(identity: dict[str, Any], available: int | None = None) -> str:
    """The memory estimate in words; refused in one line when it exceeds what is available
    (``available`` bytes, default: MemAvailable now; unknown (0): not refused)."""
    peak, text = memory_estimate(identity)
    available = available_memory() if available is None else int(available)
    if available and peak > available:
        raise AlposeError(
            f"rendering the synthetic set needs {text}, but only {_size(available)} are available; "
            "lower --size or the split sizes (--train/--val/--test, or dataset.size and "
            "dataset.splits.*), or free memory"
        )
    return f"{text}; {_size(available)} available" if available else text


def build_synthetic_cache(
    identity: dict[str, Any], workers: int = 1, progress: bool = True
) -> PoseCache:
    """Render every split of ``identity`` (see ``registry.synthetic_identity``) into one cache;
    refused first when its images would not fit in the available memory (:func:`check_memory`)."""
    gen = SyntheticConfig(**identity["generator"])
    gen.validate()
    check_memory(identity)
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("images", "joints", "visibility", "head_boxes", "family", "split")
    }
    family_names: tuple[str, ...] = ()
    total = sum(identity["splits"].values())
    bar = tqdm(total=total, desc="render", unit="img", disable=not progress)
    for split, n in identity["splits"].items():
        if split not in SPLIT_NAMES:
            raise AlposeError(f"unknown split {split!r}; use {', '.join(SPLIT_NAMES)}")
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            s = render_split(split, count, identity["seed"], gen, start=start, workers=workers)
            for key in ("images", "joints", "visibility", "head_boxes", "family"):
                parts[key].append(getattr(s, key))
            parts["split"].append(np.full(count, SPLIT_NAMES.index(split), np.uint8))
            family_names = tuple(s.family_names)
            bar.update(count)
    bar.close()
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    boxes = arrays["head_boxes"]
    return PoseCache(
        images=arrays["images"],
        joints=arrays["joints"],
        visibility=arrays["visibility"],
        normaliser=np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).astype(
            np.float32
        ),
        split=arrays["split"],
        family=arrays["family"],
        family_names=family_names,
        dataset="synthetic",
        joint_names=MPII_JOINTS,
        normaliser_kind="head_diagonal",
        provenance={"generator": "hourglass.datasets.synthetic", **identity},
    )


def write_synthetic_cache(
    cfg: Any, path: Path, workers: int = 2, progress: bool = True
) -> PoseCache:
    """Render the synthetic set a dataset config describes and write it to ``path``."""
    cache = build_synthetic_cache(synthetic_identity(cfg), workers=workers, progress=progress)
    write_cache(path, cache)
    return cache
