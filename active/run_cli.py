"""``alpose run``: every acquirer x seed x cycle of an experiment from one command (Hydra).

The same command again resumes: finished cycles are skipped. A result folder whose stored config
differs from the new one is refused, naming the differing keys and ``fresh=true``.

One job of a sweep is one cell: ``acquirer=<name>`` (a ``configs/acquirer`` option) runs only that
acquirer and ``seed=<s>`` only that seed, so ``alpose run -m acquirer=random,coreset seed=0,1``
with ``hydra/launcher=joblib`` (one machine) or ``slurm`` (submitit) runs the grid in parallel;
``active/sweep.py`` keeps the shared cycle 0 of a seed to one training. ``--dry-run`` (or
``dry_run=true``) prints the plan instead (``active/dry_run.py``); ``logger=wandb`` tracks each job
(``active/tracking.py``).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from active.layout import INITIAL
from active.sweep import SweepJob, file_lock, run_initial_once, sweep_job, threads_per_job
from hourglass.errors import AlposeError

# Keys that may change between runs of one experiment without invalidating its results.
FREE_KEYS = {
    "progress",
    "device",
    "jobs",
    "paths",
    "acquirers",
    "seeds",
    "fresh",
    "acquirer",
    "threads",
    "seed",
    "logger",
    "dry_run",
    "bench",
    "acquirer_settings",  # compared through acquirer_configs, where they end up
    "table",  # how `alpose table` tests, not what was run
    "environment",  # what computed the cells: compared on its own, a warning (run_environment)
    "environment_history",
}
# Keys added after results were first stored, at the value that reproduces the old behaviour: a
# stored config without the key counts as having this value (older result folders stay usable).
ADDED_DEFAULTS = {
    "train.amp_cpu": False,
    "train.augment.path": "sample",
    "train.channels_last": True,
    "train.compile": "off",
    "train.compile_backend": "inductor",
    "train.deterministic": False,
    "train.epoch_checkpoint": False,
    "numerics": "native",
}
# Settings that change speed, memory or crash-safety but not the numbers.
FREE_DOTTED_KEYS = {"train.epoch_checkpoint", "train.prefetch", "dataset.in_memory"}
AUGMENT_PATH = "train.augment.path"  # compared as resolved for the device: auto = sample on a CPU
_MAIN = "ALPOSE_RUN_MAIN"  # host:pid of the `alpose run` process, to tell launcher workers apart


class JobFailed(CompactHydraException):
    """An AlposeError in a launcher's worker process, carried back to the sweep as one line."""

    seen = False  # set in the process that unpickles one (the sweep's parent): exit status 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        JobFailed.seen = True


def acquirer_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """Name -> acquirer config: ``acquirers=[...]`` names plus an inline ``acquirer._target_=...``."""
    from active.acquirers.registry import acquirer_config

    configs = {str(name): acquirer_config(str(name)) for name in cfg.acquirers}
    for name, settings in (cfg.get("acquirer_settings") or {}).items():
        if str(name) in configs:  # e.g. acquirer_settings.egl_pp.pool_subsample=1000
            configs[str(name)] = OmegaConf.merge(configs[str(name)], settings)
    custom = cfg.get("acquirer")
    if custom is not None and custom.get("_target_"):
        node = OmegaConf.create(OmegaConf.to_container(custom, resolve=True))
        name = node.get("name") or str(node._target_).rsplit(".", 1)[-1].lower()
        node.name = name
        configs[name] = node
    if not configs:
        raise AlposeError(
            "no acquirers configured; set acquirers=[random,coreset] or acquirer._target_=..."
        )
    return configs


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def config_differences(stored: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ (ignoring keys that may change, e.g. seeds or device)."""

    def kept(flat: dict) -> dict:
        return {
            k: v
            for k, v in flat.items()
            if k.split(".")[0] not in FREE_KEYS and k not in FREE_DOTTED_KEYS
        }

    a, b = kept({**ADDED_DEFAULTS, **_flatten(stored)}), kept(_flatten(new))
    on_cuda = _runs_on_cuda(str(new.get("device", "auto")))
    for flat in (a, b):
        if flat.get(AUGMENT_PATH) == "auto":
            flat[AUGMENT_PATH] = "batch" if on_cuda else "sample"
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _runs_on_cuda(device: str) -> bool:
    """Whether a run with ``device`` (auto, cpu, cuda[:i]) trains on a GPU here."""
    import torch  # heavy: loaded only when a stored config is compared

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _stored_and_new(
    root: Path, cfg: DictConfig, acquirers: dict[str, DictConfig]
) -> tuple[dict | None, dict]:
    new = OmegaConf.to_container(cfg, resolve=True)
    new["acquirer_configs"] = {
        k: OmegaConf.to_container(v, resolve=True) for k, v in acquirers.items()
    }
    path = root / "config.yaml"
    stored = OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else None
    return stored, new


def stored_config_differences(stored: dict, new: dict) -> list[str]:
    """Keys in which ``new`` differs from a stored config (acquirers compared where shared)."""
    shared = set(stored.get("acquirer_configs", {})) & set(new["acquirer_configs"])
    old = {**stored, "acquirer_configs": {k: stored["acquirer_configs"][k] for k in shared}}
    now = {**new, "acquirer_configs": {k: new["acquirer_configs"][k] for k in shared}}
    return config_differences(old, now)


def _union(a: object, b: object) -> list:
    return list(dict.fromkeys([*(a or []), *(b or [])]))


def check_or_store_config(root: Path, cfg: DictConfig, acquirers: dict[str, DictConfig]) -> None:
    """Refuse a result folder made with another config; otherwise (re)write the stored config.

    The stored config gathers the acquirers and seeds of every run so far (the jobs of a sweep each
    name one); call it under the folder's lock when jobs run in parallel (``run_experiment`` does).
    """
    from hourglass.io import atomic_path

    stored, new = _stored_and_new(root, cfg, acquirers)
    new["environment"] = run_environment(cfg)
    if stored is not None and bool(cfg.fresh):
        backup = root.with_name(f"{root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(root, backup)
        print(f"fresh=true: moved the previous results to {backup}")
    elif stored is not None:
        diff = stored_config_differences(stored, new)
        if diff:
            raise AlposeError(
                f"{root} holds results of a different config (differs in: {', '.join(diff)}); "
                "rerun with fresh=true to move them aside and start afresh, or set paths.runs elsewhere"
            )
        new["acquirer_configs"] = {**stored.get("acquirer_configs", {}), **new["acquirer_configs"]}
        new["acquirers"] = _union(stored.get("acquirers"), new.get("acquirers"))
        new["seeds"] = sorted(_union(stored.get("seeds"), new.get("seeds")))
        new["environment_history"] = _environment_history(root, stored, new["environment"])
    with atomic_path(root / "config.yaml") as tmp:
        OmegaConf.save(OmegaConf.create(new), tmp)


def run_environment(cfg: DictConfig) -> dict:
    """The environment this run's cells compute in (``hourglass/environment.py``): with
    ``jobs=N`` the workers' thread count, else this process's."""
    import torch

    from hourglass.environment import describe

    threads = worker_threads(cfg) if int(cfg.get("jobs") or 1) > 1 else torch.get_num_threads()
    device = str(cfg.device)  # as the cells get it (a claimed GPU is cuda:<i> by now)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return describe(str(cfg.get("numerics", "native")), threads, device)


def _environment_history(root: Path, stored: dict, now: dict) -> list[dict]:
    """Earlier environments of this result folder; one warning line when ``now`` differs from the
    last one (cells computed before and after may differ in their last digits)."""
    from hourglass.environment import changes

    history = list(stored.get("environment_history") or [])
    before = stored.get("environment")
    if before is None:  # stored before environments were recorded
        print(f"warning: {root} has no record of the environment of its earlier cells")
        return history
    diff = changes(before, now)
    if diff:
        shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
        print(f"warning: resuming {root} in a different environment than before: {shown}")
        history.append(before)
    return history


def load_data(cfg: DictConfig):
    """The dataset cache; a missing synthetic one is rendered first (deterministic and quick), a
    missing real one is built when its config says ``auto_prepare`` (small local sets), else the
    error names the ``alpose prepare ...`` command."""
    from hourglass.datasets.registry import cache_path, load_dataset
    from hourglass.datasets.synthetic_cache import write_synthetic_cache

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
                from hourglass.datasets.real import prepare

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
    from active.acquirers.registry import build_acquirer
    from active.experiment import Experiment
    from hourglass.train_cli import build_model, train_config

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
    return Experiment(cfg, data, factory, train_cfg, built, root), acquirers


def _acquirer_choice() -> str | None:
    """The ``acquirer=<name>`` option chosen on the command line (Hydra), else None."""
    from hydra.core.hydra_config import HydraConfig

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


def job_threads(cfg: DictConfig, default: int) -> int:
    """Torch threads of one process of this run: ``threads`` when set; else one on a CPU under
    portable numerics (``hourglass/numerics.py``), else ``default``."""
    from hourglass.numerics import cpu_threads

    mode = "native" if _runs_on_cuda(str(cfg.device)) else str(cfg.get("numerics", "native"))
    return cpu_threads(mode, cfg.get("threads"), default)


def worker_threads(cfg: DictConfig) -> int:
    """Torch threads of each of the ``jobs=N`` worker processes (default: cores // N)."""
    from active.sweep import available_cores

    return job_threads(cfg, available_cores() // max(1, int(cfg.jobs)))


def configure_job(cfg: DictConfig, job: SweepJob | None) -> None:
    """Torch threads of this process (:func:`job_threads`): a sweep job's default is cores //
    parallel jobs, a plain run's every core. (The job's GPU: :func:`job_gpu`.)"""
    import torch

    if job is None:
        if int(cfg.jobs) <= 1:
            torch.set_num_threads(job_threads(cfg, torch.get_num_threads()))
        return
    torch.set_num_threads(job_threads(cfg, threads_per_job(job.parallel)))


@contextmanager
def job_gpu(cfg: DictConfig, claim: bool) -> Iterator[None]:
    """With ``claim`` (a sweep job, or one task of a ``jobs=N`` worker) run the block on a free GPU
    held for it (``active/gpu_claim.py``: ``cfg.device`` becomes ``cuda:<i>``); ``device=cpu``,
    an explicit ``cuda:<i>``, no GPU or no ``claim``: ``cfg.device`` as given."""
    from active.gpu_claim import claimed_device

    if not claim:
        yield
        return
    with claimed_device(str(cfg.device)) as device:
        cfg.device = device
        yield


@contextmanager
def tracked(cfg: DictConfig, experiment, name: str, seed: int) -> Iterator[None]:
    """Attach the configured tracker (``logger=...``) to ``experiment`` for one unfinished cell
    (``name`` ``_initial``: a seed's cycle 0); finish it afterwards."""
    from active.experiment import load_state
    from active.layout import seed_dir
    from active.tracking import NullTracker, make_tracker

    root = experiment.root
    last = load_state(seed_dir(root.parent, root.name, name, seed)).cycle
    finished = last >= (0 if name == INITIAL else experiment.plan.cycles - 1)
    # a finished cell gets no tracker run (a rerun of a done experiment logs nothing twice)
    tracker = NullTracker() if finished else make_tracker(cfg, name, seed, root)
    experiment.tracker = tracker
    try:
        yield
    finally:
        experiment.tracker = NullTracker()
        tracker.finish()


def _worker(cfg_yaml: str, task: tuple[str, int], threads: int) -> tuple[str, int]:
    """One job in a worker process (``jobs=N``): a seed's initial cycle or an (acquirer, seed) cell,
    on a free GPU held for the task (:func:`job_gpu`)."""
    import torch

    torch.set_num_threads(threads)
    cfg = OmegaConf.create(cfg_yaml)
    cfg.progress = False
    with job_gpu(cfg, claim=True):
        _run_task(cfg, task)
    return task


def _run_task(cfg: DictConfig, task: tuple[str, int]) -> None:
    """Build the experiment and run ``task``; returns nothing, so the model is freed on return."""
    experiment, _ = build_experiment(cfg)
    name, seed = task
    if str(cfg.device).startswith("cuda:"):
        print(f"  {name or 'cycle 0'} seed {seed} on {cfg.device}", flush=True)
    with tracked(cfg, experiment, name or INITIAL, seed):
        if name == "":
            run_initial_once(experiment, seed)
        else:
            experiment.run_cell(name, seed)


def run_experiment(cfg: DictConfig) -> Path:
    """Run (or resume) every cell this job selects; returns the experiment's result folder."""
    job = sweep_job()
    select_cells(cfg)
    if cfg.get("dry_run"):
        return dry_run(cfg)
    if job is not None and bool(cfg.fresh):
        raise AlposeError(
            "fresh=true cannot be used in a multirun (-m): its jobs would move each other's "
            "results aside; move the old folder aside yourself or run once without -m with fresh=true"
        )
    import torch

    configure_job(cfg, job)
    # a sweep job holds a free GPU for its whole run; with jobs=N each worker task claims its own
    with job_gpu(cfg, claim=job is not None and int(cfg.jobs) <= 1):
        if job is not None:
            print(
                f"  sweep job {job.num}: {torch.get_num_threads()} torch thread(s), device {cfg.device}",
                flush=True,
            )
        return _run_cells(cfg)


def _run_cells(cfg: DictConfig) -> Path:
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
                with tracked(cfg, experiment, name, seed):
                    run_initial_once(experiment, seed)
                    print(f"  {name} seed {seed}", flush=True)
                    experiment.run_cell(name, seed)
    else:
        threads = worker_threads(cfg)
        cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        phases = [[("", s) for s in seeds], [(n, s) for s in seeds for n in names]]
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for phase in phases:
                for name, seed in pool.map(
                    _worker, [cfg_yaml] * len(phase), phase, [threads] * len(phase)
                ):
                    if name:
                        print(f"  done: {name} seed {seed}", flush=True)
    print(
        f"finished in {(time.perf_counter() - t0) / 60:.1f} min; `alpose table {root}` summarises it"
    )
    return root


def dry_run(cfg: DictConfig) -> Path:
    """Print the resolved config, the cells that would run or be skipped and the cost; write nothing."""
    from active import dry_run as plan

    acquirers = acquirer_configs(cfg)
    root = Path(str(cfg.paths.runs)) / str(cfg.name)
    print(plan.render(cfg, root, list(acquirers), [int(s) for s in cfg.seeds]), end="")
    stored, new = _stored_and_new(root, cfg, acquirers)
    if stored is not None and not bool(cfg.fresh):
        diff = stored_config_differences(stored, new)
        if diff:
            print(
                f"note: {root} holds another config (differs in: {', '.join(diff)}); a real run is refused"
            )
    return root


def _job(cfg: DictConfig) -> None:
    """Hydra's task: run; in a launcher's worker process an AlposeError becomes a JobFailed."""
    try:
        run_experiment(cfg)
    except AlposeError as err:
        if os.environ.get(_MAIN) not in (None, f"{socket.gethostname()}:{os.getpid()}"):
            raise JobFailed(f"error: {err}") from err
        raise


def main(argv: Sequence[str]) -> int:
    """``alpose run [overrides] [--dry-run]``; returns the exit status."""
    from hourglass.hydra_app import run_hydra

    argv = ["dry_run=true" if a == "--dry-run" else a for a in argv]
    os.environ[_MAIN] = f"{socket.gethostname()}:{os.getpid()}"
    JobFailed.seen = False
    with _scratch_hydra_dir(argv) as argv:
        status = run_hydra("run", "run", argv, _job)
    return 2 if status == 1 and JobFailed.seen else status


@contextmanager
def _scratch_hydra_dir(argv: list[str]) -> Iterator[list[str]]:
    """For a dry run, point Hydra's own output folders (its log) at a temporary folder, removed
    afterwards, so that a dry run writes nothing under ``runs/``; other runs pass unchanged."""
    dry = any(
        a.split("=", 1)[0].lstrip("+") == "dry_run" and a.lower().endswith("=true") for a in argv
    )
    if not dry or any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in argv):
        yield argv
        return
    with tempfile.TemporaryDirectory(prefix="alpose-dry-run-") as scratch:
        yield [*argv, f"hydra.run.dir={scratch}/run", f"hydra.sweep.dir={scratch}/multirun"]
