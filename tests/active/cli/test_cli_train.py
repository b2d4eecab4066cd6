"""`alpose prepare` and `alpose train` end to end, and their one-line errors."""

import json
import os
import subprocess
import sys

import cv2
import pytest
from helpers.paths import REPO
from helpers.tiny import TINY_SYNTHETIC, tiny_overrides


def run_alpose(*args, cwd):
    """Run the installed-style entry point in a subprocess (as a user would)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "alpose"), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_prepare_writes_the_cache_train_reads_and_a_preview(tmp_path):
    preview = tmp_path / "grid.png"
    r = run_alpose(
        "prepare",
        "synthetic",
        "--train",
        40,
        "--val",
        8,
        "--test",
        8,
        "--seed",
        3,
        "--data-dir",
        tmp_path / "d",
        "--preview",
        preview,
        "--workers",
        1,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    from hourglass.datasets.registry import cache_path, load_dataset

    cfg = {**TINY_SYNTHETIC, "seed": 3, "splits": {"train": 40, "val": 8, "test": 8}}
    assert cache_path(cfg, tmp_path / "d").is_file()
    cache = load_dataset(cfg, tmp_path / "d")
    assert len(cache.indices("train")) == 40 and cache.family is not None
    grid = cv2.imread(str(preview))
    assert grid is not None and grid.shape[0] >= 64 and grid.shape[1] >= 64 * 4


@pytest.mark.slow
def test_train_command_prints_pckh_and_writes_metrics(tiny_data_dir, tmp_path):
    r = run_alpose(
        "train", *tiny_overrides(tiny_data_dir, tmp_path / "runs"), "train.epochs=1", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "PCKh@0.5" in r.stdout and "Mean" in r.stdout
    (metrics_file,) = (tmp_path / "runs" / "train").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics["val"]) >= {"standard", "paper"}
    assert 0.0 <= metrics["val"]["standard"]["Mean"] <= 100.0
    assert metrics["best_epoch"] == 1 and (metrics_file.parent / "weights.pt").is_file()
    env = metrics["environment"]  # a subprocess with the default numerics: portable, one thread
    assert env["numerics"] == "portable" and env["threads"] == 1 and env["cpu_capability"]


def test_train_without_cache_names_the_prepare_command(tmp_path):
    r = run_alpose("train", f"paths.data={tmp_path}", "dataset.size=128", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert (
        line.startswith("error: no dataset cache") and "alpose prepare synthetic --size 128" in line
    )


def test_unknown_command_and_bad_override_fail_cleanly(tmp_path, cli):
    status, _, err = cli("fly")
    assert status == 2 and "known commands" in err
    r = run_alpose("train", "model=nonexistent", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_a_reader_that_leaves_early_gives_no_traceback():
    """`alpose ... | head`: stdout closed before alpose writes must not end in a traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "alpose"), "analyze", "learning-loss"]
    proc = subprocess.Popen(
        [*cmd, "--k", "4", "--theta", "0.0666"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err
