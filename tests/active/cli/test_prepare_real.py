"""`alpose prepare` for real sets (errors, corrupt photos, up-to-date skip, --download) and
end-to-end `alpose run` of the paper experiments on fixture caches and of lspet_mini on real photos."""

import shutil

import numpy as np
import pytest
from helpers.real_fixtures import fixture_cache, write_photo

from hourglass.datasets.real_cache import report_path


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """`threads=1` below sets torch's thread count for this process; restore it afterwards."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _lspet_folder(tmp_path, refdata, count):
    """An LSPET-layout folder: the real joints.mat and ``count`` generated photos."""
    from hourglass.datasets.lsp import read_lspet_joints

    mat = refdata / "realimages" / "axelcarlier-lsp" / "joints.mat"
    joints, vis = read_lspet_joints(mat)
    root = tmp_path / "lspet"
    (root / "images").mkdir(parents=True)
    shutil.copy(mat, root / "joints.mat")
    for i in range(count):
        w, h = np.ceil(joints[i][vis[i] > 0].max(0) + 10).astype(int)
        write_photo(root / "images" / f"im{i + 1:05d}.jpg", int(w), int(h), seed=i)
    return root


def _mini(root, data, *extra):
    return [
        "prepare",
        "lspet_mini",
        "--root",
        root,
        "--data-dir",
        data,
        "--workers",
        "1",
        "--set",
        "lspet_count=40",
        "--set",
        "lspet_test=10",
        *extra,
    ]


def test_missing_root_wrong_layout_and_unreadable_mat_are_one_line(cli, tmp_path):
    status, _, err = cli("prepare", "mpii", "--root", tmp_path / "none")
    assert status == 2 and err.count("\n") == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    status, _, err = cli("prepare", "mpii", "--root", tmp_path / "empty")
    assert status == 2 and err.count("\n") == 1 and "wrong MPII layout" in err
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "mpii_human_pose_v1_u12_1.mat").write_bytes(b"\x00not a mat file" * 20)
    status, _, err = cli("prepare", "mpii", "--root", bad, "--data-dir", tmp_path)
    assert status == 2 and err.count("\n") == 1 and "cannot read the MPII annotation" in err
    status, _, err = cli("prepare", "lsp", "--root", tmp_path / "empty", "--lspet", tmp_path)
    assert status == 2 and err.count("\n") == 1 and "wrong LSP layout" in err
    (tmp_path / "lsp" / "images").mkdir(parents=True)
    (tmp_path / "lsp" / "joints.mat").write_bytes(b"garbage")
    status, _, err = cli("prepare", "lsp", "--root", tmp_path / "lsp", "--lspet", "null")
    assert status == 2 and err.count("\n") == 1 and "cannot read" in err


def test_corrupt_photos_are_reported_and_skipped_or_fail_the_build(cli, tmp_path, refdata):
    root = _lspet_folder(tmp_path, refdata, 40)
    (root / "images" / "im00003.jpg").unlink()
    (root / "images" / "im00007.jpg").write_bytes(b"\xff\xd8 truncated")
    data = tmp_path / "data"
    status, _, err = cli(*_mini(root, data))
    assert status == 2 and "2 of 40 photos" in err and "max_bad_fraction" in err
    assert not list(data.glob("*.h5"))
    status, out, err = cli(*_mini(root, data, "--set", "max_bad_fraction=0.1"))
    assert status == 0, err
    (cache,) = data.glob("*.h5")
    report = report_path(cache).read_text().splitlines()
    assert report[0].startswith("2 of 40") and len(report) == 3
    assert "missing" in report[1] + report[2] and "unreadable" in report[1] + report[2]
    assert "38 persons" in out
    # Unchanged sources and settings: nothing to do. A changed photo: rebuilt.
    status, out, _ = cli(*_mini(root, data, "--set", "max_bad_fraction=0.1"))
    assert status == 0 and "up to date" in out
    write_photo(root / "images" / "im00007.jpg", 120, 160, seed=99)
    status, out, _ = cli(*_mini(root, data, "--set", "max_bad_fraction=0.1"))
    assert status == 0 and "wrote" in out and "39 persons" in out


def test_download_flag_calls_the_downloader(cli, tmp_path, monkeypatch):
    import hourglass.datasets.download as download

    calls = []
    monkeypatch.setattr(download, "download_dataset", lambda name, root: calls.append((name, root)))
    status, _, err = cli(
        "prepare", "lsp", "--root", tmp_path / "a", "--lspet", tmp_path / "b", "--download"
    )
    assert [c[0] for c in calls] == ["lsp", "lspet"] and calls[0][1] == tmp_path / "a"
    assert status == 2 and "does not exist" in err  # the fake download made no folder


TINY = [
    "model.stacks=1",
    "model.channels=8",
    "model.depth=2",
    "train.batch_size=4",
    "train.eval_batch_size=16",
    "seeds=[0]",
    "initial=8",
    "per_cycle=4",
    "cycles=1",
    "epochs_first=1",
    "epochs_later=1",
    "progress=false",
    "jobs=1",
    "threads=1",
]


@pytest.mark.parametrize("kind,experiment", [("mpii", "mpii_paper"), ("lsp", "lsp_paper")])
def test_paper_experiments_run_end_to_end_on_fixture_caches(cli, tmp_path, kind, experiment):
    split = "val" if kind == "mpii" else "test"
    cache = fixture_cache(tmp_path / "fx", kind, {"train": 16, split: 4}, size=32)
    runs = tmp_path / "runs"
    status, out, err = cli(
        "run", f"experiment={experiment}", f"dataset.cache={cache}", f"paths.runs={runs}", *TINY
    )
    assert status == 0, err
    assert "budgets [8, 12]" in out
    status, out, err = cli("table", runs / experiment, "--metric", "paper")
    assert status == 0, err
    assert (runs / experiment / "table.csv").is_file() and "coreset" in out
    assert "egl_pp (reference)" in out  # the paper tables' reference row, from the config


def test_missing_real_cache_names_the_prepare_command(cli, tmp_path):
    status, _, err = cli("run", "experiment=mpii_paper", f"paths.data={tmp_path}", *TINY)
    assert status == 2 and "alpose prepare mpii --root data/mpii" in err


def test_lspet_mini_runs_end_to_end_on_real_photos(cli, refdata, tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    status, out, err = cli(
        "run",
        "experiment=lspet_mini",
        f"dataset.root={refdata / 'realimages' / 'axelcarlier-lsp'}",
        f"paths.runs={runs}",
        f"paths.data={data}",
        "dataset.lspet_count=60",
        "dataset.lspet_test=20",
        "dataset.size=64",
        "dataset.store_size=73",
        "model.channels=8",
        "model.depth=2",
        "train.batch_size=8",
        "seeds=[0]",
        "initial=16",
        "per_cycle=8",
        "cycles=1",
        "epochs_first=2",
        "epochs_later=1",
        "progress=false",
        "jobs=1",
        "threads=1",
    )
    assert status == 0, err
    assert "60 persons" in out  # prepared from the real photos on first use
    rows = (runs / "lspet_mini" / "random" / "seed_0" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("cycle,labelled,pckh_standard")
    status, out, err = cli("table", runs / "lspet_mini")
    assert status == 0, err
