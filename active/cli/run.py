"""``alpose run [overrides] [--dry-run]``: an active-learning experiment from one command (Hydra)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

from active.loop.job import MAIN_ENV, JobFailed, job
from active.loop.slurm_launcher import checked_slurm_launcher
from hourglass.hydra_app import run_hydra


def learning_curves(run_dir: Path, out: Path) -> bool:
    """The learning curves a tracker logs (``logger=wandb``), drawn by the analysis layer."""
    from active.analysis.tables import draw_run_curves  # numpy and matplotlib: after numerics

    return draw_run_curves(run_dir, out)


def main(argv: Sequence[str]) -> int:
    """``alpose run [overrides] [--dry-run]``; returns the exit status."""
    argv = ["dry_run=true" if a == "--dry-run" else a for a in argv]
    os.environ[MAIN_ENV] = f"{socket.gethostname()}:{os.getpid()}"
    JobFailed.seen = False
    with ExitStack() as stack:
        if _multirun(argv):  # hydra/launcher=slurm: the request checked, failed jobs one line each
            stack.enter_context(checked_slurm_launcher())
        argv = stack.enter_context(_scratch_hydra_dir(argv))
        status = run_hydra("run", "run", argv, partial(job, curves=learning_curves))
    return 2 if status == 1 and JobFailed.seen else status


def _multirun(argv: Sequence[str]) -> bool:
    """Whether Hydra will sweep (``-m``, ``--multirun``, ``hydra.mode=MULTIRUN``)."""
    return any(a in ("-m", "--multirun") or a.upper() == "HYDRA.MODE=MULTIRUN" for a in argv)


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
