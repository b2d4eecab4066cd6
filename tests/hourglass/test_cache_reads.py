"""Reading cached images: per-row lazy reads equal in-memory reads byte for byte, the memory rule
of ``dataset.in_memory=null`` (with a fake available-memory figure), and lock errors told apart
from damaged files."""

import pickle

import h5py
import numpy as np
import pytest

from hourglass.datasets import cache as cache_mod
from hourglass.datasets.cache import (
    LazyImages,
    PoseCache,
    gather_rows,
    load_cache,
    memory_choice,
    write_cache,
)
from hourglass.errors import AlposeError

N, SIDE = 12, 20


@pytest.fixture
def path(tmp_path):
    rng = np.random.default_rng(1)
    cache = PoseCache(
        images=rng.integers(0, 256, (N, SIDE, SIDE, 3), dtype=np.uint8),
        joints=rng.uniform(0, SIDE, (N, 16, 2)).astype(np.float32),
        visibility=np.ones((N, 16), np.int8),
        normaliser=np.ones(N, np.float32),
        split=np.zeros(N, np.uint8),
        dataset="unit",
        joint_names=tuple(f"j{i}" for i in range(16)),
    )
    return write_cache(tmp_path / "c.h5", cache)


INDICES = [
    np.array([7, 2, 11, 0]),  # unsorted
    np.array([3, 3, 9, 3, 1]),  # repeated
    np.array([[4, 1], [1, 10]]),  # 2-D
    np.array([-1, 0, -12]),  # negative
    np.zeros(0, np.int64),  # empty
    np.arange(N) % 3 == 0,  # bool mask
    slice(2, 9, 3),
    5,
    np.int64(8),
]


@pytest.mark.parametrize("idx", INDICES, ids=lambda i: repr(i)[:30])
def test_lazy_reads_equal_in_memory_reads_byte_for_byte(path, idx):
    lazy, ram = load_cache(path, in_memory=False), load_cache(path, in_memory=True)
    assert isinstance(lazy.images, LazyImages) and isinstance(ram.images, np.ndarray)
    got, want = lazy.images[idx], ram.images[idx]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_read_into_fills_the_callers_buffer_in_the_order_asked_for(path):
    lazy, ram = LazyImages(path), load_cache(path, in_memory=True).images
    idx = np.array([10, 4, 4, 0, 7])
    for images in (lazy, ram):
        out = np.full((len(idx), SIDE, SIDE, 3), 7, np.uint8)
        assert gather_rows(images, idx, out) is out
        np.testing.assert_array_equal(out, ram[idx])
    out = np.empty((len(idx), SIDE, SIDE, 3), np.uint8)
    assert lazy.read_into(idx, out) is out
    np.testing.assert_array_equal(out, ram[idx])
    with pytest.raises(ValueError, match="shape"):
        lazy.read_into(idx, np.empty((2, SIDE, SIDE, 3), np.uint8))
    with pytest.raises(ValueError, match="contiguous"):
        lazy.read_into(idx[:2], np.empty((2, SIDE, SIDE, 6), np.uint8)[..., ::2])
    with pytest.raises(IndexError):
        lazy[np.array([N])]


def test_lazy_images_survive_pickling_for_worker_processes(path):
    lazy = pickle.loads(pickle.dumps(LazyImages(path, "alpose prepare unit")))
    assert lazy.prepare_hint == "alpose prepare unit"
    np.testing.assert_array_equal(lazy[[2, 1]], load_cache(path, in_memory=True).images[[2, 1]])


def test_default_keeps_images_in_memory_when_half_the_available_memory_holds_them(
    path, monkeypatch, capsys
):
    nbytes = N * SIDE * SIDE * 3
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 2 * nbytes)
    assert isinstance(load_cache(path).images, np.ndarray)
    line = capsys.readouterr().out.strip()
    assert line.startswith("dataset cache c.h5:") and "read into memory" in line
    assert "available" in line

    monkeypatch.setattr(cache_mod, "available_memory", lambda: 2 * nbytes - 1)
    assert isinstance(load_cache(path).images, LazyImages)
    line = capsys.readouterr().out.strip()
    assert "served from disk per batch" in line and "dataset.in_memory=true" in line
    assert len(line.splitlines()) == 1

    # An explicit setting wins over the rule either way.
    assert isinstance(load_cache(path, in_memory=True).images, np.ndarray)
    assert "dataset.in_memory=true" in capsys.readouterr().out
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 10**15)
    assert isinstance(load_cache(path, in_memory=False).images, LazyImages)
    assert "served from disk" in capsys.readouterr().out
    load_cache(path, in_memory=False)  # the same choice again: said once per process
    assert capsys.readouterr().out == ""


def test_memory_rule():
    assert memory_choice(50, None, available=100)[0]
    assert not memory_choice(51, None, available=100)[0]
    assert not memory_choice(1, None, available=0)[0]  # unknown memory: stay on disk
    assert memory_choice(10**12, True, available=0) == (True, "dataset.in_memory=true")


def test_processes_loading_at_once_split_the_memory_rule(path, monkeypatch, capsys):
    assert memory_choice(25, None, available=100, sharers=2)[0]
    keep, why = memory_choice(26, None, available=100, sharers=2)
    assert not keep and "each of 2 processes" in why
    nbytes = N * SIDE * SIDE * 3
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 2 * nbytes)
    assert isinstance(load_cache(path, sharers=2).images, LazyImages)
    assert "each of 2 processes" in capsys.readouterr().out


def test_a_run_counts_the_processes_that_hold_the_dataset(monkeypatch):
    from omegaconf import OmegaConf

    from active.loop import runner
    from active.loop.sweep import SweepJob

    monkeypatch.setattr(runner, "sweep_job", lambda: None)
    assert runner.memory_sharers(OmegaConf.create({"jobs": 1})) == 1
    assert runner.memory_sharers(OmegaConf.create({"jobs": 3})) == 4  # 3 workers + the parent
    monkeypatch.setattr(runner, "sweep_job", lambda: SweepJob(num=0, parallel=4))
    assert runner.memory_sharers(OmegaConf.create({"jobs": 1})) == 4


def test_caches_are_opened_without_hdf5_file_locking(path, monkeypatch):
    seen = []
    real = h5py.File

    def recording(*args, **kwargs):
        seen.append(kwargs.get("locking"))
        return real(*args, **kwargs)

    monkeypatch.setattr(h5py, "File", recording)
    load_cache(path, in_memory=False).images[[0]]
    assert seen and all(locking is False for locking in seen)


def test_a_lock_error_says_so_and_does_not_ask_to_delete_the_cache(path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(
            "Unable to synchronously open file (unable to lock file, errno = 38, error message "
            "= 'Function not implemented')"
        )

    monkeypatch.setattr(h5py, "File", refuse)
    for in_memory in (None, False):
        with pytest.raises(AlposeError) as err:
            load_cache(path, in_memory=in_memory)
        text = str(err.value)
        assert "does not support HDF5 file locking" in text
        assert "HDF5_USE_FILE_LOCKING=FALSE" in text and "delete" not in text
    with pytest.raises(AlposeError, match="does not support HDF5 file locking"):
        LazyImages(path)


def test_a_damaged_cache_still_asks_to_re_create_it(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(AlposeError, match="delete it and re-create it") as err:
        load_cache(bad, prepare_hint="alpose prepare unit")
    assert "locking" not in str(err.value)


def test_images_are_stored_uncompressed_with_a_checksum_and_lzf_caches_still_read(path):
    with h5py.File(path, "r", locking=False) as f:
        ds = f["images"]
        assert ds.compression is None and ds.fletcher32 and ds.chunks == (1, SIDE, SIDE, 3)
        images = ds[...]
        older = path.with_name("lzf.h5")  # as older versions wrote images
        with h5py.File(older, "w") as g:
            g.create_dataset("images", data=images, chunks=(1, SIDE, SIDE, 3), compression="lzf")
            for name in f:
                if name != "images":
                    f.copy(f[name], g, name)
            g.attrs.update(f.attrs)
    for in_memory in (True, False):
        data = load_cache(older, in_memory=in_memory)
        np.testing.assert_array_equal(data.images[np.arange(N)], images)


def test_a_flipped_byte_in_an_image_chunk_is_a_read_error_not_wrong_pixels(path):
    with h5py.File(path, "r", locking=False) as f:
        info = f["images"].id.get_chunk_info(3)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 100)
        byte = f.read(1)
        f.seek(info.byte_offset + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    lazy = load_cache(path, in_memory=False)
    np.testing.assert_array_equal(lazy.images[[0, 1, 2]].shape, (3, SIDE, SIDE, 3))  # others read
    with pytest.raises(AlposeError, match="cannot read images"):
        lazy.images[[2, 3]]
    with pytest.raises(AlposeError, match="delete it and re-create it"):
        load_cache(path, in_memory=True)
