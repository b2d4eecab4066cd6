"""Tracking: logger=none does nothing; logger=wandb writes an offline run with epoch and cycle
metrics, the picks as a table and the learning curve; a missing wandb is one clear error."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from helpers.paths import REPO
from omegaconf import OmegaConf

from active.loop import tracking
from hourglass.errors import AlposeError
from hourglass.train import EpochLog


def test_offline_wandb_run_holds_the_logged_metrics(tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="offline", WANDB_SILENT="true")
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "alpose"),
        "run",
        "experiment=smoke",
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.data={tmp_path / 'data'}",
        "progress=false",
        "acquirers=[random]",
        "seeds=[0]",
        "cycles=1",
        "epochs_first=1",
        "logger=wandb",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "runs" / "smoke"
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    blob = log.read_bytes()
    for key in (
        b"epoch/train_loss",
        b"epoch/select_pckh",
        b"cycle/pckh_standard",
        b"cycle/labelled",
        b"selection/cycle_1",
        b"learning_curve",
    ):
        assert key in blob, key
    (table,) = run_dir.glob("files/media/table/selection/cycle_1*.table.json")
    picks = np.load(root / "random" / "seed_0" / "selections" / "cycle_1.npy")
    rows = json.loads(table.read_text())["data"]
    assert [r[1] for r in rows] == picks["index"].tolist() and len(rows) == 12
    assert list(run_dir.glob("files/media/images/learning_curve*.png"))


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.finished = kwargs, [], 0

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, record):
        self.logged.append(record)

    def finish(self):
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    module.Settings = lambda **kwargs: kwargs
    module.Table = lambda columns, data: ("table", columns, data)
    module.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "unset")  # recorded, so the teardown restores the caller's
    monkeypatch.delenv("WANDB_MODE")
    return module


def _cfg(tmp_path, **logger):
    return OmegaConf.create(
        {"name": "exp", "paths": {"runs": str(tmp_path)}, "logger": {"name": "wandb", **logger}}
    )


def test_wandb_defaults_to_offline_and_respects_wandb_mode(fake_wandb, tmp_path, monkeypatch):
    tracker = tracking.make_tracker(_cfg(tmp_path), "random", 2, tmp_path / "exp")
    run = fake_wandb.runs[-1]
    assert run.kwargs["mode"] == "offline" and os.environ["WANDB_MODE"] == "offline"
    assert run.kwargs["group"] == "exp" and run.kwargs["name"] == "exp-random-seed2"
    tracker.epoch(2, 1, EpochLog(3, 0.5, 0.25, 40.0, 1e-3, 0.1))
    assert run.logged[-1]["epoch/train_loss"] == 0.5 and run.logged[-1]["epoch/cycle"] == 1
    tracker.finish()
    tracker.finish()
    assert run.finished == 1  # wandb.finish once per job
    monkeypatch.setenv("WANDB_MODE", "online")
    tracking.make_tracker(_cfg(tmp_path), "random", 2, tmp_path / "exp").finish()
    assert fake_wandb.runs[-1].kwargs["mode"] == "online"
    tracking.make_tracker(_cfg(tmp_path, mode="disabled"), "random", 2, tmp_path / "exp")
    assert fake_wandb.runs[-1].kwargs["mode"] == "disabled"


def test_a_finished_cycle_logs_its_row_and_the_picks_it_made(fake_wandb, tmp_path):
    folder = tmp_path / "exp" / "random" / "seed_0"
    (folder / "selections").mkdir(parents=True)
    (folder / "metrics.csv").write_text("cycle,labelled,pckh_standard\n0,24,31.5\n1,36,\n")
    picks = np.rec.fromarrays([np.array([5, 9]), np.array([0.5, 0.25])], names="index,score")
    np.save(folder / "selections" / "cycle_1.npy", picks)
    tracker = tracking.make_tracker(_cfg(tmp_path), "random", 0, tmp_path / "exp")
    run = fake_wandb.runs[-1]
    assert len(run.logged) == 2  # a resumed cell replays its finished cycles
    run.logged.clear()
    tracker.cycle_done(folder, 0)
    (record,) = run.logged
    assert record["cycle/pckh_standard"] == 31.5 and record["cycle/labelled"] == 24
    assert record["selection/cycle_1"] == (
        "table",
        ["cycle", "index", "score"],
        [[1, 5, 0.5], [1, 9, 0.25]],
    )
    tracker.cycle_done(folder, 1)
    assert "cycle/pckh_standard" not in run.logged[-1]  # empty cells are left out


def test_logger_none_is_a_no_op_and_unknown_loggers_are_refused(tmp_path):
    none = OmegaConf.create({"logger": {"name": "none"}})
    assert isinstance(tracking.make_tracker(none, "random", 0, tmp_path), tracking.NullTracker)
    with pytest.raises(AlposeError, match="unknown logger 'tensorboard'"):
        tracking.make_tracker(
            OmegaConf.create({"logger": {"name": "tensorboard"}}), "r", 0, tmp_path
        )


def test_missing_wandb_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(AlposeError, match=r"pip install wandb"):
        tracking.make_tracker(_cfg(tmp_path), "random", 0, tmp_path / "exp")
