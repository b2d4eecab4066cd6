"""Bad input: each case exits non-zero with exactly one ``error:`` line that says what to do, and
leaves a finished run beside it untouched. ``alpose --verbose`` adds the traceback.

Runs in-process (the ``cli`` fixture) against a folder holding one finished cell (random, seed
0); the cases that need new work ask for seed 1, which ``seeds`` allows without a config change.
"""

import hashlib
import shutil

import h5py
import numpy as np
import pytest
import torch
from helpers.runs import run_in_process, smoke

CELL = ["acquirers=[random]", "seeds=[0]", "cycles=1", "threads=1"]


class Exploding:
    """An acquirer with a bug: its select raises a plain ValueError."""

    def select(self, ctx, k):
        raise ValueError("boom in select")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A result folder with one finished cell (cycles 0 and 1)."""
    runs = tmp_path_factory.mktemp("bad-input-runs")
    run_in_process(runs, data_dir, *CELL)
    return runs


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """In-process runs with threads=1 set the process-wide torch thread count; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def snapshot(runs):
    """sha256 of every result file of the finished cell and its shared cycle 0."""
    root = runs / "smoke"
    files = [p for d in ("_initial/seed_0", "random/seed_0") for p in (root / d).rglob("*")]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file()
    }


def one_error_line(status, err, code=2):
    assert status == code, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def refuse(finished, data_dir, cli):
    """Run ``alpose run`` on the finished folder with ``extra``; return its one error line."""

    def go(*extra, code=2, data=None):
        before = snapshot(finished)
        status, _, err = cli(*smoke(finished, data or data_dir, *CELL, *extra))
        line = one_error_line(status, err, code)
        assert snapshot(finished) == before  # nothing finished was touched
        return line

    return go


def test_missing_dataset_names_the_prepare_command(refuse, tmp_path):
    line = refuse("dataset=mpii", data=tmp_path)
    assert "no dataset cache" in line and "alpose prepare mpii" in line


def test_unknown_acquirer_lists_the_known_ones(refuse):
    line = refuse("acquirers=[random,oracle]")
    assert "unknown acquirer 'oracle'" in line and "coreset" in line


def test_budget_above_the_pool(refuse):
    line = refuse("initial=150", "per_cycle=20")
    assert "larger than the unlabelled pool (160 persons)" in line and "lower the budgets" in line


@pytest.mark.parametrize("value", [0, -5])
def test_zero_or_negative_images_per_cycle(refuse, value):
    line = refuse(f"per_cycle={value}")
    assert f"per_cycle={value}" in line and "at least 1" in line


def test_non_increasing_budgets(refuse):
    line = refuse("budgets=[24,24]")
    assert "strictly increasing" in line and "[24, 24]" in line


def test_empty_seed_list(refuse):
    assert "no seeds to run" in refuse("seeds=[]")


def test_unknown_override_is_one_line(refuse):
    line = refuse("epochs_lter=3")
    assert "epochs_lter" in line and "+epochs_lter" in line


def test_nan_loss_keeps_the_finished_cell(refuse, monkeypatch):
    import hourglass.train

    real = hourglass.train.per_sample_loss
    monkeypatch.setattr(
        hourglass.train, "per_sample_loss", lambda *a, **k: real(*a, **k) * float("nan")
    )
    line = refuse("seeds=[0,1]")  # seed 0 is done; seed 1's cycle 0 meets the NaN
    assert "loss became NaN/inf" in line and "Lower train.lr" in line


def _corrupt_cache(data_dir, tmp_path):
    """A copy of the smoke cache with every compressed image chunk overwritten."""
    (src,) = data_dir.glob("synthetic-*.h5")
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    with h5py.File(dst, "r") as f:
        ds = f["images"]
        chunks = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    compressed = [c for c in chunks if c.filter_mask == 0]
    assert compressed
    with open(dst, "r+b") as f:
        for c in compressed:
            f.seek(c.byte_offset + 8)
            f.write(b"\xa5" * 64)
    return dst


def test_corrupt_image_in_a_cache(refuse, data_dir, tmp_path, cli):
    cache = _corrupt_cache(data_dir, tmp_path)
    line = refuse("seeds=[0,1]", data=tmp_path)  # read whole: fails while loading
    assert str(cache) in line and "delete it and re-create it" in line
    # Read per batch (large caches): fails at the first damaged row, mid-training.
    lazy = smoke(tmp_path / "runs", tmp_path, *CELL, "+dataset.in_memory=false")
    line = one_error_line(*cli(*lazy)[::2])
    assert str(cache) in line and "cannot read images" in line and "re-create it" in line


def test_unwritable_run_directory(data_dir, cli, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status, _, err = cli(*smoke(blocker / "runs", data_dir, *CELL))
    line = one_error_line(status, err)
    assert "Not a directory" in line and "paths.runs" in line

    import hourglass.io

    def denied(*args, dir=None, **kwargs):  # root ignores chmod; deny the write like EACCES
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(hourglass.io.tempfile, "mkstemp", denied)
    status, _, err = cli(*smoke(tmp_path / "runs", data_dir, *CELL))
    line = one_error_line(status, err)
    assert "cannot write" in line and "config.yaml" in line and "Permission denied" in line


def _fake_dataset(root, mat_name):
    root.mkdir()
    (root / "images").mkdir()
    (root / mat_name).write_bytes(b"MATLAB 5.0 MAT-file, truncated" + bytes(40))


def test_unreadable_mat(cli, tmp_path):
    _fake_dataset(tmp_path / "lsp", "joints.mat")
    _fake_dataset(tmp_path / "lspet", "joints.mat")
    lsp = ["--root", tmp_path / "lsp", "--lspet", tmp_path / "lspet"]
    status, _, err = cli("prepare", "lsp", *lsp, "--data-dir", tmp_path)
    line = one_error_line(status, err)
    assert "joints.mat" in line and "cannot read" in line and "download it again" in line
    from hourglass.datasets.mpii import RELEASE_NAME

    _fake_dataset(tmp_path / "mpii", RELEASE_NAME)
    status, _, err = cli("prepare", "mpii", "--root", tmp_path / "mpii", "--data-dir", tmp_path)
    line = one_error_line(status, err)
    assert RELEASE_NAME in line and "download" in line
    assert not list(tmp_path.glob("*.h5"))


def test_unexpected_errors_are_one_line_and_verbose_adds_the_traceback(
    finished, data_dir, cli, monkeypatch
):
    monkeypatch.setenv("ALPOSE_VERBOSE", "0")  # restored afterwards; --verbose sets it to 1
    plug = ["acquirers=[]", "acquirer._target_=test_bad_input.Exploding", "acquirer.name=boom"]
    args = smoke(finished, data_dir, *CELL[1:], *plug)
    before = snapshot(finished)
    status, _, err = cli(*args)
    line = one_error_line(status, err, code=1)
    assert "unexpected ValueError: boom in select" in line and "--verbose" in line
    status, _, err = cli("--verbose", *args)
    assert status == 1
    assert "Traceback (most recent call last)" in err and "raise ValueError" in err
    assert err.strip().splitlines()[-1].startswith("error: unexpected ValueError: boom in select")
    assert snapshot(finished) == before
    assert np.load(finished / "smoke" / "random" / "seed_0" / "selections" / "cycle_1.npy").size
