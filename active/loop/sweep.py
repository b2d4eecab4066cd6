"""Parallel jobs of one experiment: file locks, the shared cycle 0 trained once, threads per job.

A Hydra multirun (``alpose run -m ... acquirer=a,b seed=0,1``) starts one job per (acquirer, seed),
with the joblib launcher on one machine or the submitit launcher on SLURM. Jobs of one seed share
its cycle 0 (``_initial/seed_<s>/``): the first job to take ``_initial/seed_<s>.lock`` trains it,
the others wait on the lock and then find it done. A killed job drops its lock with its process.
``fcntl.flock`` works on local disks and on NFS v4 (Linux emulates it with POSIX locks there).
Each job's GPU is claimed in ``active/loop/gpu_claim.py`` (a free one, held for the whole job).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from active.loop.run_files import INITIAL, load_state, seed_dir

TRAINED = "trained cycle 0"  # the line each training of a shared cycle 0 appends to its lock file
FINISHED = (
    "finished cycle"  # the line each finished cycle of a cell appends to the cell's lock file
)


@contextmanager
def file_lock(path: Path, what: str) -> Iterator[IO[str]]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); say so when waiting for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  waiting for another job: {what} ({path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def initial_lock_path(root: Path, seed: int) -> Path:
    """The lock file beside a seed's shared cycle-0 folder: ``<root>/_initial/seed_<s>.lock``."""
    return root / INITIAL / f"seed_{seed}.lock"


def run_initial_once(experiment: Any, seed: int) -> bool:
    """Train ``seed``'s shared cycle 0 unless done, under its lock; True when this call trained it.

    The lock file keeps one ``trained cycle 0`` line (pid, host, time) per training, so a sweep can
    be checked for double work.
    """
    root = Path(experiment.root)
    folder = seed_dir(root.parent, root.name, INITIAL, seed)
    done = getattr(experiment, "initial_done", None)  # also checks the checkpoint, where it can
    with file_lock(initial_lock_path(root, seed), f"cycle 0 of seed {seed}") as handle:
        if done(seed) if done is not None else load_state(folder).cycle >= 0:
            return False
        experiment.run_initial(seed)
        record(handle, f"{TRAINED} of seed {seed}")
        return True


def record(handle: IO[str], what: str) -> None:
    """Append ``what`` with this process, host and time to a held lock file (durably), so that
    double work of parallel processes can be counted afterwards."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.write(f"{what}: pid {os.getpid()} on {socket.gethostname()} at {stamp}\n")
    handle.flush()
    os.fsync(handle.fileno())


@dataclass(frozen=True)
class SweepJob:
    """Where this process stands in a Hydra multirun: its job number and the jobs run at once."""

    num: int
    parallel: int


def sweep_job() -> SweepJob | None:
    """This job's place in a Hydra multirun, or None outside one (a plain ``alpose run``)."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    cores = available_cores()
    n_jobs = hc.launcher.get("n_jobs") if "n_jobs" in hc.launcher else 1
    n_jobs = int(n_jobs) if n_jobs is not None else 1
    if n_jobs < 0:  # joblib: -1 = every core, -2 = all but one, ...
        n_jobs = max(1, cores + 1 + n_jobs)
    return SweepJob(num=int(hc.job.num), parallel=max(1, n_jobs))


def available_cores() -> int:
    """Cores this process may use (its CPU affinity: SLURM's cpus_per_task, taskset, ...)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_job(parallel: int, requested: int | None = None) -> int:
    """Torch threads for one of ``parallel`` jobs sharing this machine: cores // parallel, >= 1."""
    if requested:
        return int(requested)
    return max(1, available_cores() // max(1, parallel))
