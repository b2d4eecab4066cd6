"""The HDF5 crop cache: every dataset reader's output in one fixed format.

One row per person crop. Datasets (N = persons, S = crop side, J = joints):

=================  ==============  ==========================================================
images             uint8 (N,S,S,3)  RGB crop, chunked per image (lzf)
joints             float32 (N,J,2)  (x, y) in crop pixels, 0-based, pixel centres on integers
visibility         int8 (N,J)       1 visible, 0 annotated but occluded, -1 absent
normaliser         float32 (N,)     PCK length in crop pixels (attr ``normaliser_kind``:
                                    ``head_diagonal`` = full head-box diagonal, the metric
                                    applies the 0.6 of standard PCKh itself; or ``torso``)
crop_to_image      float32 (N,2,3)  affine map from crop pixels to source-image pixels
split              uint8 (N,)       index into attr ``split_names``
source_index       int64 (N,)       row in the source annotation (provenance)
family             int16 (N,)       optional: pose family (synthetic), attr ``family_names``
=================  ==============  ==========================================================

File attributes: ``format_version``, ``dataset``, ``joint_names``, ``image_size``, ``created_by``,
``provenance`` (JSON: generator config, seed, source files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hourglass.errors import AlposeError
from hourglass.io import atomic_path

FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class PoseCache:
    """A crop cache held in memory (arrays as documented in the module docstring)."""

    images: np.ndarray
    joints: np.ndarray
    visibility: np.ndarray
    normaliser: np.ndarray
    split: np.ndarray
    dataset: str
    joint_names: tuple[str, ...]
    crop_to_image: np.ndarray | None = None
    source_index: np.ndarray | None = None
    family: np.ndarray | None = None
    family_names: tuple[str, ...] = ()
    normaliser_kind: str = "head_diagonal"
    split_names: tuple[str, ...] = SPLIT_NAMES
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_joints(self) -> int:
        return int(self.joints.shape[1])

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split (``train``, ``val`` or ``test``)."""
        if split not in self.split_names:
            raise AlposeError(
                f"unknown split '{split}'; this cache has {', '.join(self.split_names)}"
            )
        return np.flatnonzero(self.split == self.split_names.index(split))

    def __post_init__(self) -> None:
        n, j = self.joints.shape[:2]
        checks = {
            "images": (self.images.shape[0], n),
            "visibility": (self.visibility.shape, (n, j)),
            "normaliser": (self.normaliser.shape, (n,)),
            "split": (self.split.shape, (n,)),
        }
        for name, (got, want) in checks.items():
            if got != want:
                raise AlposeError(f"cache field '{name}' has shape {got}, expected {want}")


def write_cache(path: str | Path, cache: PoseCache) -> Path:
    """Write ``cache`` to ``path`` atomically; returns the path."""
    path = Path(path)
    n = len(cache)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(
            "images", data=cache.images, chunks=(1, *cache.images.shape[1:]), compression="lzf"
        )
        f["joints"] = cache.joints.astype(np.float32)
        f["visibility"] = cache.visibility.astype(np.int8)
        f["normaliser"] = cache.normaliser.astype(np.float32)
        f["split"] = cache.split.astype(np.uint8)
        crop = cache.crop_to_image
        if crop is None:
            crop = np.tile(np.eye(2, 3, dtype=np.float32), (n, 1, 1))
        f["crop_to_image"] = crop.astype(np.float32)
        src = cache.source_index if cache.source_index is not None else np.arange(n)
        f["source_index"] = src.astype(np.int64)
        if cache.family is not None:
            f["family"] = cache.family.astype(np.int16)
            f.attrs["family_names"] = json.dumps(list(cache.family_names))
        f.attrs.update(
            format_version=FORMAT_VERSION,
            dataset=cache.dataset,
            joint_names=json.dumps(list(cache.joint_names)),
            image_size=cache.image_size,
            normaliser_kind=cache.normaliser_kind,
            split_names=json.dumps(list(cache.split_names)),
            created_by="alpose",
            provenance=json.dumps(cache.provenance, default=str),
        )
    return path


def load_cache(path: str | Path, prepare_hint: str = "alpose prepare synthetic") -> PoseCache:
    """Read a cache written by :func:`write_cache` into memory.

    A missing file names the command that creates it; a wrong format version asks to re-prepare.
    """
    path = Path(path)
    if not path.is_file():
        raise AlposeError(f"no dataset cache at {path}; create it with `{prepare_hint}`")
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise AlposeError(
                    f"{path} has cache format {version}, this alpose reads {FORMAT_VERSION}; "
                    f"re-create it with `{prepare_hint}`"
                )
            attrs = dict(f.attrs)
            return PoseCache(
                images=f["images"][...],
                joints=f["joints"][...],
                visibility=f["visibility"][...],
                normaliser=f["normaliser"][...],
                split=f["split"][...],
                crop_to_image=f["crop_to_image"][...],
                source_index=f["source_index"][...],
                family=f["family"][...] if "family" in f else None,
                family_names=tuple(json.loads(attrs.get("family_names", "[]"))),
                dataset=str(attrs["dataset"]),
                joint_names=tuple(json.loads(attrs["joint_names"])),
                normaliser_kind=str(attrs["normaliser_kind"]),
                split_names=tuple(json.loads(attrs["split_names"])),
                provenance=json.loads(attrs.get("provenance", "{}")),
            )
    except AlposeError:
        raise
    except (OSError, KeyError) as err:
        raise AlposeError(
            f"cannot read dataset cache {path} ({err}); delete it and re-create it with `{prepare_hint}`"
        ) from None
