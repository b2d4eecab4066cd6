"""Run a Hydra application from inside ``alpose <command>``, with alpose's error convention."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hourglass import numerics
from hourglass.config import config_dir
from hourglass.errors import AlposeError, report, verbose

UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def run_hydra(
    command: str, config_name: str, argv: Sequence[str], task: Callable[[DictConfig], object]
) -> int:
    """Compose ``configs/<config_name>.yaml`` with ``argv`` as overrides and call ``task(cfg)``.

    Returns the exit status: 0, or that of :func:`hourglass.errors.report` after one ``error:``
    line (2 for an :class:`AlposeError`, an unknown override or a run folder Hydra cannot write
    its log to, 1 for anything unexpected); ``--help`` exits as Hydra says. In a launcher's
    worker process the error goes back to the sweep instead (after its traceback, when verbose).
    """
    status, caller = 0, os.getpid()

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        nonlocal status
        try:
            if "numerics" in cfg:  # before the task loads torch; a config file may have set it
                cfg.numerics = numerics.apply(str(cfg.numerics))
            task(cfg)
        except Exception as err:  # one line here, before Hydra would print its own traceback
            if os.getpid() != caller:  # a launcher's worker process: Hydra carries it back
                if verbose():  # into the worker's own log (a SLURM job's stderr file)
                    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
                raise
            status = report(err)

    saved, saved_full = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"alpose {command}", *argv]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors propagate here instead of printing
    try:
        _main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception as err:  # composition (unknown override), unwritable hydra.run.dir, ...
        return report(_unwritable_folder(err) or err)
    finally:
        sys.argv = saved
        if saved_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full
    return status


def _unwritable_folder(err: BaseException) -> AlposeError | None:
    """Hydra failed to create or write its log folder (``hydra.run.dir``, ``hydra.sweep.dir``): the
    deepest existing folder on the way, as one line saying what to do; None for other errors.
    Hydra wraps the ``OSError`` (``Unable to configure handler 'file'``), so its causes are read."""
    for cause in _causes(err):
        if isinstance(cause, OSError) and cause.filename and cause.errno in UNWRITABLE:
            folder = Path(os.fsdecode(cause.filename))
            while not folder.is_dir() and folder.parent != folder:
                folder = folder.parent
            return AlposeError(
                f"cannot write to {folder} ({cause.strerror}), where Hydra keeps this run's "
                f"log; make that folder writable, or set paths.runs to a writable folder"
            )
    return None


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or during, each once."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
