"""The HDF5 crop cache: round trip, and the errors a user meets."""

import h5py
import numpy as np
import pytest

from hourglass.datasets.cache import PoseCache, load_cache, write_cache
from hourglass.errors import AlposeError


def _cache(n=5, j=16, size=32):
    rng = np.random.default_rng(0)
    return PoseCache(
        images=rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        joints=rng.uniform(0, size, (n, j, 2)).astype(np.float32),
        visibility=rng.integers(-1, 2, (n, j)).astype(np.int8),
        normaliser=rng.uniform(5, 10, n).astype(np.float32),
        split=np.array([0, 0, 1, 2, 2], np.uint8)[:n],
        dataset="unit",
        joint_names=tuple(f"j{i}" for i in range(j)),
        family=np.arange(n, dtype=np.int16),
        family_names=tuple(f"f{i}" for i in range(n)),
        provenance={"seed": 3},
    )


def test_write_then_load_round_trips_every_field(tmp_path):
    original = _cache()
    path = write_cache(tmp_path / "c.h5", original)
    loaded = load_cache(path)
    for name in ("images", "joints", "visibility", "normaliser", "split", "family"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
    assert loaded.joint_names == original.joint_names
    assert loaded.provenance == {"seed": 3}
    assert loaded.indices("test").tolist() == [3, 4]
    np.testing.assert_array_equal(loaded.crop_to_image[0], np.eye(2, 3))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_missing_cache_names_the_prepare_command(tmp_path):
    with pytest.raises(AlposeError, match="alpose prepare synthetic --size 128"):
        load_cache(tmp_path / "none.h5", prepare_hint="alpose prepare synthetic --size 128")


def test_corrupt_and_outdated_caches_are_refused(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(AlposeError, match="re-create"):
        load_cache(bad)
    path = write_cache(tmp_path / "old.h5", _cache())
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 0
    with pytest.raises(AlposeError, match="format 0"):
        load_cache(path)


def test_inconsistent_fields_are_refused():
    c = _cache()
    with pytest.raises(AlposeError, match="visibility"):
        PoseCache(**{**c.__dict__, "visibility": c.visibility[:, :3]})
