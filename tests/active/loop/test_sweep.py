"""Sweeps: parallel jobs (joblib launcher) share one training of cycle 0; single-cell selection;
sweep jobs and `jobs=N` workers run on a claimed free GPU; the dry run lists cells and estimates
cost; a failed worker job is one line and exit 2."""

import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.paths import REPO

import active.loop.experiment  # noqa: F401  (imported before the forks below, not in each of them)
from active.loop import gpu_claim, runner
from active.loop.sweep import (
    TRAINED,
    SweepJob,
    initial_lock_path,
    run_initial_once,
    threads_per_job,
)

# A smaller smoke: 2 cycles (24 then 36 labelled), 1 epoch each.
FAST = ["experiment=smoke", "progress=false", "cycles=1", "epochs_first=1"]


def alpose(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [sys.executable, str(REPO / "scripts" / "alpose"), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep-data")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    """`alpose run -m hydra/launcher=joblib acquirer=random,coreset seed=0`, two jobs at once."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    runs = tmp_path_factory.mktemp("sweep-runs")
    r = alpose(
        "run",
        "-m",
        *FAST,
        f"paths.runs={runs}",
        f"paths.data={data_dir}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "acquirer=random,coreset",
        "seed=0",
    )
    assert r.returncode == 0, r.stderr
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    return runs / "smoke"


def test_two_parallel_jobs_write_both_cells_and_train_cycle_0_once(sweep):
    for name in ("random", "coreset"):
        state = json.loads((sweep / name / "seed_0" / "state.json").read_text())
        assert state["cycle"] == 1
        assert len((sweep / name / "seed_0" / "metrics.csv").read_text().splitlines()) == 3
    lines = initial_lock_path(sweep, 0).read_text().splitlines()
    assert len([x for x in lines if x.startswith(TRAINED)]) == 1, lines
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith((".", "_"))) == [
        "config.yaml",
        "coreset",
        "random",
    ]
    stored = (sweep / "config.yaml").read_text()  # both jobs' acquirers kept, neither refused
    assert "active.acquirers.random.RandomAcquirer" in stored
    assert "active.acquirers.coreset.CoreSetAcquirer" in stored


class _SlowInitial:
    """Stands in for Experiment: cycle 0 takes a while and leaves a mark per training."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run_initial(self, seed: int) -> None:
        folder = self.root / "_initial" / f"seed_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)
        with open(self.root / "trainings.txt", "a") as f:
            f.write(f"{os.getpid()}\n")
        (folder / "state.json").write_text(json.dumps({"cycle": 0, "labelled": []}))


def _contend(root: str, start: float) -> bool:
    time.sleep(max(0.0, start - time.time()))
    return run_initial_once(_SlowInitial(Path(root)), 0)


def test_contending_jobs_train_the_shared_cycle_once(tmp_path):
    start = time.time() + 0.5
    with multiprocessing.get_context("fork").Pool(3) as pool:
        trained = pool.starmap(_contend, [(str(tmp_path), start)] * 3)
    assert sorted(trained) == [False, False, True]
    assert len((tmp_path / "trainings.txt").read_text().splitlines()) == 1
    assert run_initial_once(_SlowInitial(tmp_path), 0) is False  # done: never again


def test_threads_split_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(1) == cores
    assert threads_per_job(cores * 4) == 1
    assert threads_per_job(2, requested=3) == 3


def _held_slots(lock_dir: Path) -> list[str]:
    """Names of the GPU slot files someone holds (a non-blocking flock fails)."""
    held = []
    for path in sorted(lock_dir.glob("gpu_*.lock")):
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(path.name)
    return held


class _DeviceRecorder:
    """Stands in for Experiment: cycle 0 done, each cell records its device and the held slots."""

    def __init__(self, cfg, lock_dir: Path, log: list) -> None:
        self.cfg, self.lock_dir, self.log = cfg, lock_dir, log
        self.root = Path(cfg.paths.runs) / str(cfg.name)
        self.plan = SimpleNamespace(budgets=[24, 36], cycles=2)
        self.protocol = SimpleNamespace(name="standard")

    def initial_done(self, seed: int) -> bool:
        return True

    def run_cell(self, name: str, seed: int) -> None:
        self.log.append((name, seed, str(self.cfg.device), _held_slots(self.lock_dir)))


@pytest.fixture
def two_fake_gpus(tmp_path, monkeypatch):
    """2 fake GPUs (no CUDA), locks under tmp_path; returns (lock dir, cells log, config)."""
    import torch

    from active.bench.speed import compose

    lock_dir = tmp_path / "gpus"
    monkeypatch.setenv("ALPOSE_GPU_LOCK_DIR", str(lock_dir))
    monkeypatch.delenv("ALPOSE_GPU_CLAIM", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_claim, "visible_gpu_count", lambda: 2)
    log: list = []
    monkeypatch.setattr(
        runner,
        "build_experiment",
        lambda cfg: (_DeviceRecorder(cfg, lock_dir, log), runner.acquirer_configs(cfg)),
    )
    overrides = ["experiment=smoke", "acquirers=[random]", "seeds=[0]", "progress=false"]
    cfg = compose("run", [*overrides, f"paths.runs={tmp_path}"])
    threads = torch.get_num_threads()
    yield lock_dir, log, cfg
    torch.set_num_threads(threads)


def _hold(path: Path):
    """Hold ``path``'s flock as another job would (an open file description of our own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (closed by the caller's with)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_sweep_job_runs_on_a_free_gpu_held_for_the_whole_job(two_fake_gpus, monkeypatch):
    lock_dir, log, cfg = two_fake_gpus
    monkeypatch.setattr(runner, "sweep_job", lambda: SweepJob(num=5, parallel=2))
    names = gpu_claim.slot_names(2)
    with _hold(lock_dir / names[1]):  # GPU 1 (= job 5 % 2 GPUs) is busy with another job
        runner.run_experiment(cfg)
    assert log == [("random", 0, "cuda:0", names)]  # on the free GPU, held while it ran
    assert _held_slots(lock_dir) == []  # released with the job


def test_jobs_n_workers_each_claim_a_free_gpu_per_task(two_fake_gpus):
    lock_dir, log, cfg = two_fake_gpus
    names = gpu_claim.slot_names(2)
    cfg_yaml = runner.OmegaConf.to_yaml(cfg, resolve=True)
    with _hold(lock_dir / names[0]):  # GPU 0 busy with another worker's task
        assert runner._worker(cfg_yaml, ("random", 0), 1) == ("random", 0)
    assert runner._worker(cfg_yaml, ("random", 0), 1) == ("random", 0)
    assert log == [("random", 0, "cuda:1", names), ("random", 0, "cuda:0", [names[0]])]
    assert _held_slots(lock_dir) == []


def _dry(cli, runs, data, *extra):
    status, out, err = cli(
        "run", *FAST, f"paths.runs={runs}", f"paths.data={data}", *extra, "--dry-run"
    )
    assert status == 0, err
    return out


def _cells(out):
    block = out.split("--- cells")[1].split("--- cost")[0]
    rows = [line for line in block.splitlines()[2:] if line.startswith("  ")]
    return {tuple(line.split()[:2]): line for line in rows}


def test_dry_run_lists_done_and_missing_cells_and_writes_nothing(cli, sweep, data_dir):
    runs = sweep.parent
    before = sorted(str(p) for p in runs.rglob("*"))
    out = _dry(cli, runs, data_dir, "seeds=[0,1]")
    assert "--- resolved config ---" in out and "name: smoke" in out
    cells = _cells(out)
    assert set(cells) == {(a, s) for a in ("_initial", "random", "coreset") for s in ("0", "1")}
    assert "skip (done)" in cells[("random", "0")] and "skip (done)" in cells[("_initial", "0")]
    assert "run cycles 0-1" in cells[("coreset", "1")]
    assert "run cycle 0" in cells[("_initial", "1")]
    assert "2 cell(s) to run, 2 done (skipped)" in out
    # seed 1 still to train: cycle 0 (24 x 0.8 x 1 epoch) + 2 cells x cycle 1 (36 x 0.8 x 1)
    assert "77 image-epochs" in out
    assert "from this run's metrics.csv timing" in out
    assert sorted(str(p) for p in runs.rglob("*")) == before  # not even Hydra's log folder


def test_dry_run_of_one_cell_and_the_bench_estimate(cli, tmp_path, data_dir):
    out = _dry(cli, tmp_path, data_dir, "acquirer=coreset", "seed=3")
    assert set(_cells(out)) == {("_initial", "3"), ("coreset", "3")}
    assert "no estimate: run alpose bench" in out
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"rows": [{"model": "x", "train_images_per_second": 7.0}]}))
    out = _dry(cli, tmp_path, data_dir, "acquirer=coreset", "seed=3", f"bench={bench}")
    assert f"48 image-epochs at 7.0 images/s (from alpose bench results {bench})" in out
    assert not (tmp_path / "smoke").exists()  # nothing written, Hydra's log folder included


def test_dry_run_reads_the_rows_of_alpose_bench(cli, tmp_path, data_dir):
    def row(what, path, rate, model="hourglass_small", device="cpu"):
        return {"what": what, "model": model, "device": device, "path": path, "images_per_s": rate}

    rows = [
        row("train", "batch", 500.0),
        row("train", "sample", 48.0),
        row("train", "sample", 9999.0, model="hourglass_paper"),
        row("train", "sample", 9999.0, device="cuda"),
        row("inference", "-", 216.0),
        row("acquire coreset", "-", 68.0),
    ]
    (tmp_path / "bench.json").write_text(json.dumps({"bench": "speed", "rows": rows}))
    out = _dry(cli, tmp_path, data_dir, "acquirer=coreset", "seed=3", "device=cpu")
    # cycle 0 (24 x 0.8 x 1 epoch) + cycle 1 (36 x 0.8 x 1) = 48 image-epochs at 48/s
    assert (
        "48 image-epochs at 48.0 images/s" in out and "hourglass_small on cpu, sample path" in out
    )
    # per epoch the 20 % holdout (4.8, 7.2) plus the 48 test persons per cycle: 108 at 216/s
    assert "evaluation: 108 images at 216.0 images/s = about 0 s" in out
    # one selection after cycle 0: the 136 unlabelled persons scored at 68/s = 2 s; total 3.5 s
    assert "acquisition: about 2 s (measured acquirers)" in out
    assert "total: about 4 s" in out


def test_failed_jobs_in_a_joblib_sweep_are_one_line_and_exit_2(tmp_path, data_dir):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    r = alpose(
        "run",
        "-m",
        *FAST,
        f"paths.runs={tmp_path}",
        f"paths.data={data_dir}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "acquirer=random,coreset",
        "seeds=[]",
    )
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.strip().splitlines()[-1]
        == "error: no seeds to run: set seeds=[0,1,...] or seed=<s>"
    )
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 2  # the failed job's overrides, then the error


def test_fresh_is_refused_in_a_multirun(cli, tmp_path, data_dir):
    status, _, err = cli(
        "run", "-m", *FAST, f"paths.runs={tmp_path}", f"paths.data={data_dir}", "fresh=true"
    )
    assert status == 2
    assert err.strip().splitlines()[-1].startswith("error: fresh=true cannot be used in a multirun")
