"""Run every acquirer x seed x cycle of an experiment (``alpose run``), here or in worker processes.

The same command again resumes: finished cycles are skipped (the stored config is checked first,
:mod:`active.loop.run_config`). One job of a sweep is one cell: ``acquirer=<name>`` runs only that
acquirer and ``seed=<s>`` only that seed, so a Hydra launcher (joblib on one machine, submitit on
SLURM) runs the grid in parallel; :mod:`active.loop.sweep` keeps the shared cycle 0 of a seed to one
training. ``dry_run=true`` prints the plan instead (:mod:`active.loop.plan`); ``logger=wandb``
tracks each job (:mod:`active.loop.tracking`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from multiprocessing import get_context
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from active.acquirers.registry import build_acquirer
from active.loop import plan
from active.loop.cell_identity import cell_identity
from active.loop.experiment import Experiment
from active.loop.gpu_claim import claimed_device
from active.loop.run_config import (
    acquirer_configs,
    check_or_store_config,
    check_run_config,
    stored_and_new,
    stored_config_differences,
)
from active.loop.run_files import INITIAL, load_state, seed_dir
from active.loop.sweep import SweepJob, file_lock, run_initial_once, sweep_job, threads_per_job
from active.loop.threads import job_threads, worker_threads
from active.loop.tracking import CurvePlotter, NullTracker, make_tracker
from hourglass.datasets.real import prepare
from hourglass.datasets.registry import cache_path, load_dataset
from hourglass.datasets.synthetic_cache import write_synthetic_cache
from hourglass.errors import AlposeError
from hourglass.factories import build_model, train_config

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for this process when its parent dies


def load_data(cfg: DictConfig):
    """The dataset cache; a missing synthetic one is rendered first (deterministic and quick), a
    missing real one is built when its config says ``auto_prepare`` (small local sets), else the
    error names the ``alpose prepare ...`` command."""
    path = cache_path(cfg.dataset, cfg.paths.data)
    builds = cfg.dataset.name == "synthetic" or cfg.dataset.get("auto_prepare")
    if builds and not path.is_file():  # parallel jobs: one builds, the others wait and load it
        with file_lock(path.with_name(path.name + ".lock"), f"building {path.name}"):
            if path.is_file():
                pass
            elif cfg.dataset.name == "synthetic":
                print(f"rendering the synthetic set into {path} (once)")
                write_synthetic_cache(cfg.dataset, path, workers=2, progress=bool(cfg.progress))
            else:
                plain = OmegaConf.to_container(cfg.dataset, resolve=True)
                print(prepare(plain, cfg.paths.data, workers=2, progress=bool(cfg.progress)))
    return load_dataset(cfg.dataset, cfg.paths.data, sharers=memory_sharers(cfg))


def memory_sharers(cfg: DictConfig) -> int:
    """Processes of this run that hold the dataset at once on this machine: the sweep's parallel
    jobs, each with its ``jobs=N`` workers plus the process that starts them."""
    job = sweep_job()
    jobs = max(1, int(cfg.get("jobs") or 1))
    return (job.parallel if job is not None else 1) * (jobs + 1 if jobs > 1 else 1)


def build_experiment(cfg: DictConfig):
    """Data, model factory, training config and acquirers of a composed config."""
    data = load_data(cfg)
    acquirers = acquirer_configs(cfg)
    built = {name: build_acquirer(node) for name, node in acquirers.items()}
    root = Path(cfg.paths.runs) / str(cfg.name)

    def factory():
        return build_model(cfg.model, data.num_joints, data.image_size)

    factory()  # fail early on a model that does not fit the input size
    train_cfg = train_config(
        cfg if cfg.get("seed") is not None else OmegaConf.merge(cfg, {"seed": 0})
    )
    experiment = Experiment(cfg, data, factory, train_cfg, built, root)
    experiment.identities = {
        INITIAL: cell_identity(cfg, None),
        **{name: cell_identity(cfg, node) for name, node in acquirers.items()},
    }
    return experiment, acquirers


def _acquirer_choice() -> str | None:
    """The ``acquirer=<name>`` option chosen on the command line (Hydra), else None."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("acquirer")
    return str(choice) if choice not in (None, "null") else None


def select_cells(cfg: DictConfig) -> None:
    """Narrow ``cfg`` to the cells this job runs: ``acquirer=<name>`` -> that acquirer alone (its
    config in ``cfg.acquirer``), ``seed=<s>`` -> that seed alone."""
    if _acquirer_choice() is not None:
        cfg.acquirers = []
    if cfg.get("seed") is not None:
        cfg.seeds = [int(cfg.seed)]
    if not len(cfg.seeds):
        raise AlposeError("no seeds to run: set seeds=[0,1,...] or seed=<s>")


def configure_job(cfg: DictConfig, job: SweepJob | None) -> None:
    """Torch threads of this process (:func:`job_threads`): a sweep job's default is cores //
    parallel jobs, a plain run's every core. (The job's GPU: :func:`job_gpu`.)"""
    if job is None:
        if int(cfg.jobs) <= 1:
            torch.set_num_threads(job_threads(cfg, torch.get_num_threads()))
        return
    torch.set_num_threads(job_threads(cfg, threads_per_job(job.parallel)))


@contextmanager
def job_gpu(cfg: DictConfig, claim: bool) -> Iterator[None]:
    """With ``claim`` (a sweep job, or one task of a ``jobs=N`` worker) run the block on a free GPU
    held for it (``active/loop/gpu_claim.py``: ``cfg.device`` becomes ``cuda:<i>``); ``device=cpu``,
    an explicit ``cuda:<i>``, no GPU or no ``claim``: ``cfg.device`` as given."""
    if not claim:
        yield
        return
    with claimed_device(str(cfg.device)) as device:
        cfg.device = device
        yield


@contextmanager
def tracked(
    cfg: DictConfig, experiment, name: str, seed: int, curves: CurvePlotter | None = None
) -> Iterator[None]:
    """Attach the configured tracker (``logger=...``) to ``experiment`` for one unfinished cell
    (``name`` ``_initial``: a seed's cycle 0); finish it afterwards."""
    root = experiment.root
    last = load_state(seed_dir(root.parent, root.name, name, seed)).cycle
    finished = last >= (0 if name == INITIAL else experiment.plan.cycles - 1)
    # a finished cell gets no tracker run (a rerun of a done experiment logs nothing twice)
    tracker = NullTracker() if finished else make_tracker(cfg, name, seed, root, curves)
    experiment.tracker = tracker
    try:
        yield
    finally:
        experiment.tracker = NullTracker()
        tracker.finish()


def die_with(parent: int) -> None:
    """Worker initializer: the worker dies with its parent, however the parent ends (Linux's
    parent-death signal, and a thread that watches the parent where that is missing), and leaves
    SIGINT to the parent, which stops its workers itself (:func:`stop_workers`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing semaphore, which a killed worker could never hand
    # back; a worker prints no bars (progress=false), a thread lock is all it needs
    tqdm.set_lock(threading.RLock())
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="alpose-parent-watch", daemon=True).start()


def stop_workers(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Stop every worker of ``pool`` now: SIGTERM, up to ``grace`` seconds to end, then SIGKILL.
    Whatever a worker was writing stays a temporary file, which the cell's next owner removes."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # CPython's pid -> Process
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join(1.0)
    pool.shutdown(wait=True, cancel_futures=True)


def _worker(
    cfg_yaml: str, task: tuple[str, int], threads: int, curves: CurvePlotter | None = None
) -> tuple[str, int]:
    """One job in a worker process (``jobs=N``): a seed's initial cycle or an (acquirer, seed) cell,
    on a free GPU held for the task (:func:`job_gpu`)."""
    torch.set_num_threads(threads)
    cfg = OmegaConf.create(cfg_yaml)
    cfg.progress = False
    with job_gpu(cfg, claim=True):
        _run_task(cfg, task, curves)
    return task


def _run_task(cfg: DictConfig, task: tuple[str, int], curves: CurvePlotter | None) -> None:
    """Build the experiment and run ``task``; returns nothing, so the model is freed on return."""
    experiment, _ = build_experiment(cfg)
    name, seed = task
    if str(cfg.device).startswith("cuda:"):
        print(f"  {name or 'cycle 0'} seed {seed} on {cfg.device}", flush=True)
    with tracked(cfg, experiment, name or INITIAL, seed, curves):
        if name == "":
            run_initial_once(experiment, seed)
        else:
            experiment.run_cell(name, seed)


def run_experiment(cfg: DictConfig, curves: CurvePlotter | None = None) -> Path:
    """Run (or resume) every cell this job selects; returns the experiment's result folder.
    ``curves`` draws the learning curves a tracker logs (none: no figure)."""
    job = sweep_job()
    select_cells(cfg)
    if cfg.get("dry_run"):
        return dry_run(cfg)
    check_run_config(cfg, acquirer_configs(cfg))  # every number, before threads or data are set up
    if job is not None and bool(cfg.fresh):
        raise AlposeError(
            "fresh=true cannot be used in a multirun (-m): its jobs would move each other's "
            "results aside; move the old folder aside yourself or run once without -m with fresh=true"
        )
    configure_job(cfg, job)
    # a sweep job holds a free GPU for its whole run; with jobs=N each worker task claims its own
    with job_gpu(cfg, claim=job is not None and int(cfg.jobs) <= 1):
        if job is not None:
            print(
                f"  sweep job {job.num}: {torch.get_num_threads()} torch thread(s), device {cfg.device}",
                flush=True,
            )
        return _run_cells(cfg, curves)


def _run_cells(cfg: DictConfig, curves: CurvePlotter | None) -> Path:
    """Store (or check) the config and run every selected cell, here or in ``jobs`` processes."""
    experiment, acquirers = build_experiment(cfg)
    root = experiment.root
    with file_lock(root / ".config.lock", "the stored config"):
        check_or_store_config(root, cfg, acquirers)
    seeds = [int(s) for s in cfg.seeds]
    names = list(acquirers)
    jobs = max(1, int(cfg.jobs))
    print(
        f"alpose run: experiment '{cfg.name}', acquirers {names}, seeds {seeds}, "
        f"budgets {experiment.plan.budgets}, protocol {experiment.protocol.name}, "
        f"{jobs} process(es), results in {root}",
        flush=True,
    )
    t0 = time.perf_counter()
    if jobs == 1:
        for seed in seeds:
            for name in names:
                with tracked(cfg, experiment, name, seed, curves):
                    run_initial_once(experiment, seed)
                    print(f"  {name} seed {seed}", flush=True)
                    experiment.run_cell(name, seed)
    else:
        threads = worker_threads(cfg)
        cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        phases = [[("", s) for s in seeds], [(n, s) for s in seeds for n in names]]
        pool = ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=die_with, initargs=(os.getpid(),)
        )
        try:
            for phase in phases:
                for name, seed in pool.map(
                    _worker,
                    [cfg_yaml] * len(phase),
                    phase,
                    [threads] * len(phase),
                    [curves] * len(phase),
                ):
                    if name:
                        print(f"  done: {name} seed {seed}", flush=True)
        except BaseException:  # SIGINT, SIGTERM (as an exception, see active.cli.main), a failure
            stop_workers(pool)
            raise
        pool.shutdown()
    print(
        f"finished in {(time.perf_counter() - t0) / 60:.1f} min; `alpose table {root}` summarises it"
    )
    return root


def dry_run(cfg: DictConfig) -> Path:
    """Print the resolved config, the cells that would run or be skipped and the cost; write nothing."""
    acquirers = acquirer_configs(cfg)
    check_run_config(cfg, acquirers)  # every number, as a real run checks it before storing
    root = Path(str(cfg.paths.runs)) / str(cfg.name)
    print(plan.render(cfg, root, list(acquirers), [int(s) for s in cfg.seeds]), end="")
    stored, new = stored_and_new(root, cfg, acquirers)
    if stored is not None and not bool(cfg.fresh):
        diff = stored_config_differences(stored, new)
        if diff:
            print(
                f"note: {root} holds another config (differs in: {', '.join(diff)}); a real run is refused"
            )
    return root
