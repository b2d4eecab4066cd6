"""Hydra's task for ``alpose run``, and how a failed job of a launcher reaches the sweep."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from hourglass.errors import AlposeError

MAIN_ENV = "ALPOSE_RUN_MAIN"  # host:pid of the `alpose run` process, to tell launcher workers apart


class JobFailed(CompactHydraException):
    """An AlposeError in a launcher's worker process, carried back to the sweep as one line."""

    seen = False  # set in the process that unpickles one (the sweep's parent): exit status 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        JobFailed.seen = True


def job(cfg: DictConfig, curves: Callable[[Path, Path], bool] | None = None) -> None:
    """Hydra's task: run; in a launcher's worker process an AlposeError becomes a JobFailed."""
    from active.loop.runner import run_experiment  # loads torch: only after numerics are applied

    try:
        run_experiment(cfg, curves)
    except AlposeError as err:
        if os.environ.get(MAIN_ENV) not in (None, f"{socket.gethostname()}:{os.getpid()}"):
            raise JobFailed(f"error: {err}") from err
        raise
