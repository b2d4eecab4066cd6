"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, checked and reported.

Hydra instantiates launchers only from its ``hydra_plugins`` package, so instead of a subclass,
:func:`checked_slurm_launcher` puts :func:`launch` in place of the plugin's ``launch`` while an
``alpose run -m`` sweep runs (and puts the plugin's back afterwards). The jobs themselves run as
the plugin runs them (``configs/hydra/launcher/slurm.yaml`` takes every ``submitit_slurm`` key);
:func:`launch` adds two things:

* before submitting, the request is checked against ``sinfo`` (:mod:`active.loop.slurm_check`):
  a partition that does not exist or more GPUs, CPUs or memory than any of its nodes has is one
  ``error:`` line naming the key to change, instead of an ``sbatch`` error or a job PENDING forever;
* every job is waited for, and each one that failed (its cell raised, or SLURM ended it:
  ``scancel``, time limit, out of memory, a lost node) is reported as its overrides plus one short
  ``error:`` line naming its log file, instead of the plugin's exception on the first one, which
  carries that job's whole stderr. The sweep then exits 2; rerunning it resumes every cell.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from active.loop import slurm_check
from active.loop.job import JobFailed
from hourglass.errors import AlposeError

log = logging.getLogger(__name__)

PLUGIN_MODULE = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
INIT_KEYS = {"submitit_folder", "max_num_timeout"}  # the executor's, not sbatch's (as the plugin)
HINTS = {  # what to do about a job SLURM ended, by its final state
    "TIMEOUT": "raise hydra.launcher.timeout_min, then rerun the same command to resume it",
    "OUT_OF_MEMORY": "raise hydra.launcher.mem_gb, then rerun the same command to resume it",
}
RESUME = "rerun the same command to resume it"
MESSAGE_CHARS = 300  # an unexpected error's message is cut to this (its traceback is in the log)


@contextmanager
def checked_slurm_launcher() -> Iterator[None]:
    """While inside, the plugin's ``SlurmLauncher.launch`` is :func:`launch` (nothing changes
    where the plugin is not installed: ``hydra/launcher=slurm`` then fails to compose)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    # the class Hydra will instantiate: its plugin scan runs each plugin module again, so the
    # class is taken from the scan's list, not imported
    found = [c for c in Plugins.instance().discover(Launcher) if c.__module__ == PLUGIN_MODULE]
    SlurmLauncher = next((c for c in found if c.__name__ == "SlurmLauncher"), None)
    if SlurmLauncher is None:
        yield
        return
    own = SlurmLauncher.__dict__.get("launch")  # None: it inherits the base class's
    SlurmLauncher.launch = launch  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del SlurmLauncher.launch
        else:
            SlurmLauncher.launch = own  # type: ignore[method-assign]


def launch(
    self: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """The plugin's ``BaseSubmititLauncher.launch`` (1.2) with the check first and every job
    waited for and reported (:func:`collect`); ``self`` is the plugin's launcher."""
    import submitit  # as the plugin: loaded only when a sweep is launched
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    assert self.config is not None
    slurm_check.check(self.params, slurm_check.read_sinfo())
    executor = submitit.AutoExecutor(
        cluster=self._EXECUTOR,
        folder=self.params["submitit_folder"],
        **{f"{self._EXECUTOR}_max_num_timeout": self.params.get("max_num_timeout", 0)},
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            key if key in shared else f"{self._EXECUTOR}_{key}": value
            for key, value in self.params.items()
            if key not in INIT_KEYS
        }
    )
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in self.config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
    params = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        params.append(
            (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
        )
    try:
        with redirect_stderr(io.StringIO()):  # submitit prints sbatch's error too: once is enough
            jobs = executor.map_array(self, *zip(*params, strict=True))
    except submitit.core.utils.FailedJobError as err:  # sbatch refused the array
        raise AlposeError(
            f"sbatch refused the jobs ({_last_line(str(err))}); check the request: "
            "hydra.launcher.partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min"
        ) from None
    return collect(jobs, job_overrides)


def collect(jobs: Sequence[Any], job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
    """Wait for every job; report each failed one (its overrides, one ``error:`` line) and raise
    the last one's :class:`JobFailed` after the others are printed."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    returns, failed = [], []
    for job, overrides in zip(jobs, job_overrides, strict=True):
        try:
            ret = job.results()[0]
        except UncompletedJobError:  # SLURM ended it: no result file
            failed.append((list(overrides), ended_message(job)))
            continue
        except FailedJobError:  # an error outside the cell (e.g. unpickling the job)
            failed.append(
                (
                    list(overrides),
                    f"SLURM job {job.job_id} failed before its cell ran (log: {job.paths.stderr}); "
                    f"see the log, then {RESUME}",
                )
            )
            continue
        if ret.status == JobStatus.FAILED:
            failed.append((list(overrides), failed_message(job, ret._return_value)))
        returns.append(ret)
    for number, (overrides, message) in enumerate(failed, 1):
        print(f"Error executing job with overrides: {overrides}", file=sys.stderr, flush=True)
        if number == len(failed):
            raise JobFailed(message)
        print(f"error: {message}", file=sys.stderr, flush=True)
    return returns


def ended_message(job: Any) -> str:
    """The line for a job that SLURM ended before it wrote its result."""
    try:
        state = str(job.state).split()[0] or "UNKNOWN"
    except Exception:  # sacct gone: the state is not essential to the line
        state = "UNKNOWN"
    hint = HINTS.get(state, RESUME if state == "CANCELLED" else f"see the log, then {RESUME}")
    return (
        f"SLURM job {job.job_id} ended {state} before its cell finished "
        f"(log: {job.paths.stderr}); {hint}"
    )


def failed_message(job: Any, err: BaseException) -> str:
    """The line for a job whose cell raised: an alpose error as it is, anything else cut short."""
    if isinstance(err, JobFailed):
        return str(err).removeprefix("error: ")
    text = " ".join(str(err).split())
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 3] + "..."
    return (
        f"SLURM job {job.job_id} failed: unexpected {type(err).__name__}: {text} "
        f"(log: {job.paths.stderr}); rerun with `alpose --verbose ...` to put the traceback there"
    )


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no message"
