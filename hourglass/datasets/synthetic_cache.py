"""Render the synthetic pose set's splits into a :class:`PoseCache`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hourglass.datasets.cache import SPLIT_NAMES, PoseCache, write_cache
from hourglass.datasets.registry import synthetic_identity
from hourglass.datasets.synthetic import SyntheticConfig, render_split
from hourglass.joints import MPII_JOINTS

CHUNK = 1000  # images per progress-bar step


def build_synthetic_cache(
    identity: dict[str, Any], workers: int = 1, progress: bool = True
) -> PoseCache:
    """Render every split of ``identity`` (see ``registry.synthetic_identity``) into one cache."""
    gen = SyntheticConfig(**identity["generator"])
    gen.validate()
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("images", "joints", "visibility", "head_boxes", "family", "split")
    }
    family_names: tuple[str, ...] = ()
    total = sum(identity["splits"].values())
    bar = tqdm(total=total, desc="render", unit="img", disable=not progress)
    for split, n in identity["splits"].items():
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; use {', '.join(SPLIT_NAMES)}")
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
