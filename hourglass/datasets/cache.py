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
family             int16 (N,)       optional: pose family (synthetic) or source subset (LSP/LSPET),
                                    attr ``family_names``
=================  ==============  ==========================================================

Format 2 adds crops stored *with margin* (real photos, ``hourglass.datasets.crops``): ``images``
is then (N,T,T,3), a square window of ``crop["store_scale"]`` x the joint-box extent around the
person (T need not equal the model input side, attr ``image_size``), and ``joints``,
``normaliser`` and ``crop_to_image`` describe the *evaluation* crop the model sees
(``hourglass.datasets.views`` cuts it, or an augmented training crop, out of the stored pixels):

=================  ==============  ==========================================================
stored_to_image    float32 (N,2,3)  affine map from stored pixels to source-image pixels
window             float32 (N,3)    joint-box centre x, y and extent max(h, w), image pixels
image_wh           int32 (N,2)      source image width and height (the crop is clipped to it)
=================  ==============  ==========================================================

plus attr ``crop`` (JSON: ``train`` scale range, ``eval`` scale, ``store_scale``). A cache without
these fields is written as format 1, byte for byte as before (the synthetic set).

File attributes: ``format_version``, ``dataset``, ``joint_names``, ``image_size``, ``created_by``,
``provenance`` (JSON: generator config, seed, source files; real sets: ``source_hash``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hourglass.errors import AlposeError
from hourglass.io import atomic_path

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 = no margin fields; still written for such caches
SPLIT_NAMES = ("train", "val", "test")
# Caches whose images exceed this many bytes stay on disk and are read per batch (LazyImages).
IN_MEMORY_LIMIT = 2 * 1024**3


class LazyImages:
    """Read-on-demand view of an HDF5 ``images`` dataset: ``images[idx]`` reads only those rows.

    Any integer index array works (unsorted, repeated); rows are read in sorted order as HDF5
    needs and put back in the order asked for. Each row is one compressed chunk.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        self._ds = self._file["images"]
        self.shape = tuple(self._ds.shape)
        self.dtype = self._ds.dtype
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self._ds[int(idx)]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        unique, inverse = np.unique(idx.astype(np.int64), return_inverse=True)
        try:
            rows = self._ds[unique]
        except OSError as err:  # a damaged chunk (filter failure) or a truncated file
            raise AlposeError(
                f"cannot read images from the dataset cache {self.path} ({err}); delete it and "
                "re-create it with `alpose prepare ...` (alpose run re-renders a synthetic one)"
            ) from None
        return rows[inverse.reshape(idx.shape)]

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


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
    # Format 2 (crops stored with margin); None for caches whose images are the model input.
    stored_to_image: np.ndarray | None = None
    window: np.ndarray | None = None
    image_wh: np.ndarray | None = None
    crop: dict | None = None
    input_size: int | None = None
    # Runtime option, not stored: anchor lambda_head for training targets (0 = off; paper: 0.8).
    target_head_pull: float = 0.0

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        """Side of the crop the model sees (the stored side unless crops carry a margin)."""
        return int(self.input_size or self.images.shape[1])

    @property
    def has_margin(self) -> bool:
        """True when ``images`` are stored windows to cut model crops from (format 2)."""
        return self.window is not None

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
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(
            "images", data=cache.images, chunks=(1, *cache.images.shape[1:]), compression="lzf"
        )
        write_fields(f, cache)
    return path


def create_image_dataset(f: h5py.File, side: int) -> h5py.Dataset:
    """An empty, growable ``images`` dataset (rows appended as they are decoded)."""
    return f.create_dataset(
        "images",
        shape=(0, side, side, 3),
        maxshape=(None, side, side, 3),
        dtype=np.uint8,
        chunks=(1, side, side, 3),
        compression="lzf",
    )


def write_fields(f: h5py.File, cache: PoseCache) -> None:
    """Every field and attribute except ``images`` (already in ``f``)."""
    n = len(cache.joints)
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
        format_version=FORMAT_VERSION if cache.has_margin else 1,
        dataset=cache.dataset,
        joint_names=json.dumps(list(cache.joint_names)),
        image_size=cache.image_size,
        normaliser_kind=cache.normaliser_kind,
        split_names=json.dumps(list(cache.split_names)),
        created_by="alpose",
        provenance=json.dumps(cache.provenance, default=str),
    )
    if cache.has_margin:
        f["stored_to_image"] = np.asarray(cache.stored_to_image, np.float32)
        f["window"] = np.asarray(cache.window, np.float32)
        f["image_wh"] = np.asarray(cache.image_wh, np.int32)
        f.attrs["crop"] = json.dumps(cache.crop or {})


def load_cache(
    path: str | Path, prepare_hint: str = "alpose prepare synthetic", in_memory: bool | None = None
) -> PoseCache:
    """Read a cache written by :func:`write_cache`.

    Images are read into memory when ``in_memory`` (default: when they take less than
    ``IN_MEMORY_LIMIT`` bytes), else served from disk per batch by :class:`LazyImages`.
    A missing file names the command that creates it; a wrong format version asks to re-prepare.
    """
    path = Path(path)
    if not path.is_file():
        raise AlposeError(f"no dataset cache at {path}; create it with `{prepare_hint}`")
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("format_version", -1))
            if version not in READABLE_VERSIONS:
                raise AlposeError(
                    f"{path} has cache format {version}, this alpose reads formats {READABLE_VERSIONS}; "
                    f"re-create it with `{prepare_hint}`"
                )
            attrs = dict(f.attrs)
            ds = f["images"]
            nbytes = int(np.prod(ds.shape)) * ds.dtype.itemsize
            keep = in_memory if in_memory is not None else nbytes < IN_MEMORY_LIMIT
            margin = "window" in f
            return PoseCache(
                images=ds[...] if keep else LazyImages(path),
                stored_to_image=f["stored_to_image"][...] if margin else None,
                window=f["window"][...] if margin else None,
                image_wh=f["image_wh"][...] if margin else None,
                crop=json.loads(attrs.get("crop", "{}")) if margin else None,
                input_size=int(attrs["image_size"]) if margin else None,
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
