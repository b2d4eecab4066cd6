"""The HDF5 crop cache: every dataset reader's output in one fixed format.

One row per person crop. Datasets (N = persons, S = crop side, J = joints):

=================  ==============  ==========================================================
images             uint8 (N,S,S,3)  RGB crop, one chunk per image (``IMAGE_STORAGE``)
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

import errno
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hourglass.errors import AlposeError
from hourglass.io import atomic_path

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 = no margin fields; still written for such caches
SPLIT_NAMES = ("train", "val", "test")
# dataset.in_memory=null: images are read into memory when they take at most this share of the
# machine's available memory (MemAvailable), else served from disk per batch (LazyImages).
MEMORY_SHARE = 0.5
# Words of an OSError that says HDF5 could not lock the file (not that the file is damaged).
LOCK_WORDS = ("file locking", "unable to lock", "errno = 38", "function not implemented")


def open_for_reading(path: str | Path) -> h5py.File:
    """``h5py.File(path, "r")`` without HDF5 file locking.

    A reader needs no lock, and locking fails with errno 38 (ENOSYS) on file systems without
    POSIX locks (Lustre, some NFS). Raises OSError as h5py does.
    """
    try:
        return h5py.File(path, "r", locking=False)
    except (TypeError, ValueError):  # an HDF5 library older than 1.10.7 has no locking option
        return h5py.File(path, "r")


def is_lock_error(err: BaseException) -> bool:
    """True when an OSError is HDF5 failing to lock a file rather than a damaged file."""
    text = str(err).lower()
    return getattr(err, "errno", None) == errno.ENOSYS or any(w in text for w in LOCK_WORDS)


def read_error(path: str | Path, err: BaseException, prepare_hint: str) -> AlposeError:
    """The one-line error for a cache that cannot be read: a lock failure or damage."""
    if is_lock_error(err):
        return AlposeError(
            f"cannot open the dataset cache {path}: HDF5 could not lock the file ({err}); the "
            "file system does not support HDF5 file locking (Lustre, NFS), or the file is open "
            "elsewhere with other locking settings: set HDF5_USE_FILE_LOCKING=FALSE in the "
            "environment and run again (a lock failure, not a damaged file)"
        )
    return AlposeError(
        f"cannot read dataset cache {path} ({err}); delete it and re-create it with `{prepare_hint}`"
    )


def available_memory() -> int:
    """Bytes of memory available to a new allocation without swapping (Linux MemAvailable;
    elsewhere the free physical pages); 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 0


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def memory_choice(
    nbytes: int, in_memory: bool | None, available: int | None = None, sharers: int = 1
) -> tuple[bool, str]:
    """(keep the images in memory?, why) for ``nbytes`` of images.

    ``in_memory`` True/False decides; None keeps them when they take at most ``MEMORY_SHARE`` of
    ``available`` bytes (default: :func:`available_memory` now) divided by ``sharers``, the
    processes that load a copy at once (parallel jobs on one machine), leaving the rest for the
    model, the batches and other processes.
    """
    if in_memory is not None:
        return bool(in_memory), f"dataset.in_memory={str(bool(in_memory)).lower()}"
    available = available_memory() if available is None else int(available)
    sharers = max(1, int(sharers))
    each = f" for each of {sharers} processes" if sharers > 1 else ""
    if nbytes * sharers <= MEMORY_SHARE * available:
        return True, f"{_size(available)} available{each}"
    return False, (
        f"only {_size(available)} available, images may take {MEMORY_SHARE:.0%} of it{each}; "
        "dataset.in_memory=true forces memory"
    )


_SAID: set[tuple] = set()  # what this process has said already (one line per cache and choice)


def _log(message: str, key: tuple) -> None:
    """Print ``message`` once per process and ``key`` (stdout: stderr carries only the one error
    line)."""
    if key not in _SAID:
        _SAID.add(key)
        print(message, flush=True)


class LazyImages:
    """Read-on-demand view of an HDF5 ``images`` dataset (N, T, T, 3): ``images[idx]`` reads only
    those rows, each one compressed chunk, straight into the output array.

    Rows are read one by one (h5py's fancy indexing is 20-100x slower per row); any index works
    (unsorted, repeated, negative, a bool mask, a slice) and rows come back in the order asked
    for. :meth:`read_into` fills a caller's buffer (e.g. pinned memory for a device copy).
    """

    def __init__(self, path: str | Path, prepare_hint: str = "alpose prepare ...") -> None:
        self.path = Path(path)
        self.prepare_hint = prepare_hint  # named by a read error: the command that re-creates it
        try:
            self._file = open_for_reading(self.path)
        except OSError as err:  # also on unpickling in a worker process
            raise read_error(self.path, err, prepare_hint) from None
        self._ds = self._file["images"]
        self.shape = tuple(self._ds.shape)
        self.dtype = self._ds.dtype
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._row_space = h5py.h5s.create_simple(self.shape[1:])
        self._file_space = self._ds.id.get_space()
        self._lock = threading.Lock()  # the file-space selection is shared by the reads

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, idx) -> tuple[np.ndarray, tuple[int, ...]]:
        """Flat int64 row numbers (0..N-1) of an index, and the index's shape."""
        n = self.shape[0]
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(n))
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} rows")
            idx = np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"row indices must be integers, got {idx.dtype}")
        flat = idx.astype(np.int64).ravel()
        if flat.size and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(flat < 0, flat + n, flat), idx.shape

    def read_into(self, idx, out: np.ndarray) -> np.ndarray:
        """Read rows ``idx`` into ``out`` (len(idx), T, T, 3), C-contiguous, this dtype; returns
        ``out``. A repeated row is read once and copied."""
        rows, _ = self._rows(idx)
        if out.shape != (len(rows), *self.shape[1:]) or out.dtype != self.dtype:
            raise ValueError(
                f"out has shape {out.shape} {out.dtype}, need {(len(rows), *self.shape[1:])} "
                f"{self.dtype}"
            )
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writeable C-contiguous array")
        first: dict[int, int] = {}
        count = (1, *self.shape[1:])
        try:
            with self._lock:
                for k, r in enumerate(rows.tolist()):
                    seen = first.setdefault(r, k)
                    if seen != k:
                        out[k] = out[seen]
                        continue
                    self._file_space.select_hyperslab((r, 0, 0, 0), count)
                    self._ds.id.read(self._row_space, self._file_space, out[k])
        except OSError as err:  # a damaged chunk (filter failure) or a truncated file
            raise AlposeError(
                f"cannot read images from the dataset cache {self.path} ({err}); delete it and "
                f"re-create it with `{self.prepare_hint}` (alpose run re-renders a synthetic one)"
            ) from None
        return out

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return self.read_into([idx], np.empty((1, *self.shape[1:]), self.dtype))[0]
        rows, shape = self._rows(idx)
        out = self.read_into(rows, np.empty((len(rows), *self.shape[1:]), self.dtype))
        return out.reshape(*shape, *self.shape[1:])

    def __getstate__(self) -> dict:
        return {"path": self.path, "prepare_hint": self.prepare_hint}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state.get("prepare_hint", "alpose prepare ..."))


def gather_rows(images: np.ndarray | LazyImages, idx, out: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an in-memory image array or :class:`LazyImages` into ``out``
    (len(idx), T, T, 3) (e.g. the numpy view of a pinned tensor); returns ``out``."""
    if isinstance(images, LazyImages):
        return images.read_into(idx, out)
    return np.take(images, np.asarray(idx, dtype=np.int64), axis=0, out=out)


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


# How image chunks are stored. ``checksum`` (written now): uncompressed with HDF5's Fletcher-32
# checksum per chunk, so a damaged chunk is still a read error. lzf saves only ~20 % on photos and
# reads ~3.6x slower (600 LSP photos at 293 px, one core: 1,438 rows/s lzf, 5,181 checksum, 12,612
# bare), too slow to feed a GPU from disk. Caches written with lzf by older versions read as before.
IMAGE_STORAGE = {"checksum": {"fletcher32": True}, "lzf": {"compression": "lzf"}, "none": {}}


def image_filters(kind: str = "checksum") -> dict:
    """``h5py.create_dataset`` keywords of an ``IMAGE_STORAGE`` kind."""
    if kind not in IMAGE_STORAGE:
        raise AlposeError(f"image storage {kind!r}: use one of {', '.join(IMAGE_STORAGE)}")
    return dict(IMAGE_STORAGE[kind])


def write_cache(path: str | Path, cache: PoseCache) -> Path:
    """Write ``cache`` to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(
            "images", data=cache.images, chunks=(1, *cache.images.shape[1:]), **image_filters()
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
        **image_filters(),
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
    path: str | Path,
    prepare_hint: str = "alpose prepare synthetic",
    in_memory: bool | None = None,
    sharers: int = 1,
) -> PoseCache:
    """Read a cache written by :func:`write_cache`.

    Images are read into memory when ``in_memory``, served from disk per batch by
    :class:`LazyImages` when not, and by default (None) read into memory when they take at most
    ``MEMORY_SHARE`` of the machine's available memory, split between ``sharers`` processes
    loading it at once (:func:`memory_choice`); one line on
    stdout says which and why. The file is opened without HDF5 locking. A missing file names the
    command that creates it; a wrong format version or a damaged file asks to re-create it; a
    file system without HDF5 locking is named as such (the file is not damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise AlposeError(f"no dataset cache at {path}; create it with `{prepare_hint}`")
    try:
        with open_for_reading(path) as f:
            version = int(f.attrs.get("format_version", -1))
            if version not in READABLE_VERSIONS:
                raise AlposeError(
                    f"{path} has cache format {version}, this alpose reads formats {READABLE_VERSIONS}; "
                    f"re-create it with `{prepare_hint}`"
                )
            attrs = dict(f.attrs)
            ds = f["images"]
            nbytes = int(np.prod(ds.shape)) * ds.dtype.itemsize
            keep, why = memory_choice(nbytes, in_memory, sharers=sharers)
            where = "read into memory" if keep else "served from disk per batch"
            _log(
                f"dataset cache {path.name}: {_size(nbytes)} of images {where} ({why})",
                (path, keep, in_memory),
            )
            margin = "window" in f
            return PoseCache(
                images=ds[...] if keep else LazyImages(path, prepare_hint),
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
        raise read_error(path, err, prepare_hint) from None
