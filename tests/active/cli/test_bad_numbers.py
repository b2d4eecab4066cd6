"""Every bad number is caught where it enters: exit 2, exactly one ``error:`` line naming the key
and the value, no traceback, and for ``alpose run`` nothing stored (no ``config.yaml``).

Runs in-process (the ``cli`` fixture) on the smoke experiment; the analysis cases read one
finished smoke run.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers.runs import run_in_process, smoke

from hourglass.checks import Rule, check

CELL = ["acquirers=[random,coreset]", "seeds=[0]", "cycles=1", "threads=1"]

# (override, text the error line must hold): every number of a run config that was accepted
# silently, failed later as `unexpected ...`, or was stored in config.yaml.
RUN_CASES = [
    ("seeds=[-1]", "seeds=[-1]"),
    ("seeds=[0,0]", "distinct"),
    ("seed=-3", "-3"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.eval_batch_size=0", "train.eval_batch_size=0"),
    ("train.lr=nan", "train.lr=nan"),
    ("train.lr=-0.1", "train.lr=-0.1"),
    ("train.epochs=0", "train.epochs=0"),
    ("train.sigma=0", "train.sigma=0"),
    ("train.plateau_factor=1.5", "train.plateau_factor=1.5"),
    ("train.prefetch=-1", "train.prefetch=-1"),
    ("train.augment.flip=2", "train.augment.flip=2"),
    ("train.augment.scale_min=2", "train.augment.scale_min=2"),
    ("initial=0", "initial=0"),
    ("per_cycle=-5", "per_cycle=-5"),
    ("cycles=0", "cycles=0"),
    ("cycles=-1", "cycles=-1"),
    ("budgets=[24,0]", "[24, 0]"),
    ("epochs_first=0", "epochs_first=0"),
    ("epochs_later=-1", "epochs_later=-1"),
    ("jobs=0", "jobs=0"),
    ("threads=0", "threads=0"),
    ("pool_subsample=0", "pool_subsample=0"),
    ("protocol.holdout_fraction=1.5", "protocol.holdout_fraction=1.5"),
    ("protocol.holdout_fraction=0", "protocol.holdout_fraction=0"),
    ("model.channels=0", "model.channels=0"),
    ("model.stacks=-1", "model.stacks=-1"),
    ("+dataset.generator.occluder_prob=5", "dataset.generator.occluder_prob=5"),
    ("dataset.splits.train=-1", "dataset.splits.train=-1"),
    ("+acquirer_settings.egl_pp.pool_subsample=5", "not in this run"),
    ("+acquirer_settings.nosuch.k=1", "no acquirer 'nosuch'"),
    ("+acquirer_settings.coreset.chunk=0", "acquirer_settings.coreset.chunk=0"),
    ("+acquirer_settings.coreset.chnk=9", "chnk"),
]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """In-process runs with threads=1 set the process-wide torch thread count; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def one_error_line(status: int, err: str) -> str:
    assert status == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and "error: unexpected" not in err
    return lines[0]


@pytest.mark.parametrize(("override", "said"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_run_number_is_refused_and_nothing_is_stored(cli, data_dir, tmp_path, override, said):
    status, _, err = cli(*smoke(tmp_path, data_dir, *CELL, override))
    line = one_error_line(status, err)
    assert said in line, line
    assert not (tmp_path / "smoke" / "config.yaml").exists()
    assert not list((tmp_path / "smoke").glob("*/seed_*"))  # no cell started


@pytest.mark.parametrize(
    ("override", "said"),
    [*RUN_CASES, ("threads=-2", "threads=-2")],
    ids=[c[0] for c in RUN_CASES] + ["threads=-2"],
)
def test_bad_run_number_is_refused_by_the_dry_run(cli, data_dir, tmp_path, override, said):
    status, out, err = cli(*smoke(tmp_path, data_dir, *CELL, override, "--dry-run"))
    line = one_error_line(status, err)
    assert said in line, line
    assert "cell(s) to run" not in out  # refused before the plan is printed
    assert not (tmp_path / "smoke" / "config.yaml").exists()


def test_negative_threads_in_a_real_run(cli, data_dir, tmp_path):
    status, _, err = cli(*smoke(tmp_path, data_dir, *CELL, "threads=-2"))
    assert "threads=-2" in one_error_line(status, err)


# -- alpose train -----------------------------------------------------------------------------
SMOKE_SET = ["dataset.seed=1", "dataset.splits={train:160,val:24,test:48}"]
TRAIN_CASES = [
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.eval_batch_size=0", "train.eval_batch_size=0"),
    ("train.lr=nan", "train.lr=nan"),
    ("train.epochs=0", "train.epochs=0"),
    ("train.augment.flip=-0.5", "train.augment.flip=-0.5"),
    ("threads=-2", "threads=-2"),
    ("seed=-1", "seed=-1"),
    ("model.depth=0", "model.depth=0"),
]


@pytest.fixture(scope="module")
def smoke_set(data_dir, tmp_path_factory):
    """The smoke experiment's synthetic cache in ``data_dir`` (rendered once)."""
    from hourglass.datasets.registry import cache_path
    from hourglass.datasets.synthetic_cache import write_synthetic_cache

    cfg = {"name": "synthetic", "size": 64, "seed": 1, "generator": {}}
    cfg["splits"] = {"train": 160, "val": 24, "test": 48}
    path = cache_path(cfg, data_dir)
    if not path.is_file():
        write_synthetic_cache(cfg, path, workers=1, progress=False)
    return data_dir


@pytest.mark.parametrize(("override", "said"), TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_number_is_refused(cli, smoke_set, tmp_path, override, said):
    args = ["train", *SMOKE_SET, f"paths.data={smoke_set}", f"paths.runs={tmp_path}", override]
    status, _, err = cli(*args, "progress=false")
    line = one_error_line(status, err)
    assert said in line, line
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("weights*.pt"))


# -- alpose prepare synthetic -----------------------------------------------------------------
PREPARE_CASES = [
    (["--train", "0", "--val", "0", "--test", "0"], "holds no person"),
    (["--train", "-1"], "dataset.splits.train=-1"),
    (["--set", "occluder_prob=abc"], "occluder_prob='abc'"),
    (["--set", "occluder_prob=5"], "occluder_prob=5"),
    (["--set", "clip_length=0"], "clip_length=0"),
    (["--set", "clutter_min=5", "--set", "clutter_max=2"], "clutter_min=5"),
    (["--seed", "-1"], "dataset.seed=-1"),
    (["--size", "4"], "dataset.size=4"),
    (["--workers", "0"], "--workers=0"),
    (["--size", "100000"], "TB of memory"),
    (["--train", "1000000000"], "TB of memory"),
]


@pytest.mark.parametrize(
    ("flags", "said"), PREPARE_CASES, ids=[" ".join(c[0]) for c in PREPARE_CASES]
)
def test_bad_prepare_number_is_refused_before_rendering(cli, tmp_path, flags, said):
    status, out, err = cli("prepare", "synthetic", *flags, "--data-dir", tmp_path)
    line = one_error_line(status, err)
    assert said in line, line
    assert not list(tmp_path.glob("*.h5"))
    assert "wrote" not in out


def test_prepare_says_its_memory_estimate_before_rendering(cli, tmp_path):
    status, out, err = cli(
        "prepare", "synthetic", "--size", "16", "--train", "3", "--val", "1", "--test", "0",
        "--data-dir", tmp_path, "--workers", "1",
    )  # fmt: skip
    assert status == 0, err
    first = out.splitlines()[0]
    assert first.startswith("rendering 4 persons at 16 px: about") and "available" in first


def test_memory_above_the_available_is_refused_with_the_estimate():
    from hourglass.datasets.synthetic_cache import check_memory
    from hourglass.errors import AlposeError

    identity = {"size": 64, "splits": {"train": 1000, "val": 0, "test": 10}}
    assert "about 24.8 MB" in check_memory(identity, available=10**9)
    with pytest.raises(AlposeError, match=r"train 1,000 x 64² px x 3 bytes = 12.3 MB.*1.0 MB"):
        check_memory(identity, available=10**6)


# -- report and inspect on one finished run ----------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("bad-numbers-runs")
    run_in_process(runs, data_dir, *CELL)
    return runs / "smoke"


def test_report_with_a_seed_the_run_lacks(cli, finished, tmp_path):
    status, _, err = cli("report", finished, "--seeds", "5", "--out", tmp_path / "r.html")
    line = one_error_line(status, err)
    assert "no seed 5" in line and "its seeds are 0" in line
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("command", ["report", "inspect"])
def test_damaged_selection_is_one_line_naming_the_file(cli, finished, tmp_path, command):
    run = tmp_path / "smoke"
    shutil.copytree(finished, run)
    sel = run / "coreset" / "seed_0" / "selections" / "cycle_1.npy"
    sel.write_bytes(sel.read_bytes()[:40])  # truncated
    if command == "report":
        args = ["report", run, "--out", tmp_path / "r.html"]
    else:
        args = ["inspect", run, "--acquirer", "coreset", "--seed", "0", "--cycle", "1"]
    line = one_error_line(*cli(*args)[::2])
    assert str(sel) in line and "move the cell folder" in line and "alpose run" in line


def test_selection_of_a_foreign_layout_is_one_line(cli, finished, tmp_path):
    run = tmp_path / "smoke"
    shutil.copytree(finished, run)
    sel = run / "random" / "seed_0" / "selections" / "cycle_1.npy"
    np.save(sel, np.arange(12))  # a plain array, no index/score fields
    line = one_error_line(
        *cli("inspect", run, "--acquirer", "random", "--seed", "0", "--cycle", "1")[::2]
    )
    assert str(sel) in line and "damaged" in line


def test_rules_describe_what_is_allowed():
    with pytest.raises(
        Exception, match=r"x=True is not allowed: it must be a whole number at least 1"
    ):
        check("x", True, Rule(integer=True, low=1))
    with pytest.raises(Exception, match=r"in \(0, 1\)"):
        check("f", 1.0, Rule(low=0, high=1, low_open=True, high_open=True))
    check("n", None, Rule(integer=True, low=1, null=True))
