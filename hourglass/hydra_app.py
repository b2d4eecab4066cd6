"""Run a Hydra application from inside ``alpose <command>``, with alpose's error convention."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import hydra
from omegaconf import DictConfig

from hourglass import numerics
from hourglass.config import config_dir
from hourglass.errors import report


def run_hydra(
    command: str, config_name: str, argv: Sequence[str], task: Callable[[DictConfig], object]
) -> int:
    """Compose ``configs/<config_name>.yaml`` with ``argv`` as overrides and call ``task(cfg)``.

    Returns the exit status: 0, or that of :func:`hourglass.errors.report` after one ``error:``
    line (2 for an :class:`AlposeError` or an unknown override, 1 for anything unexpected, also
    when Hydra itself fails, e.g. on an unwritable run folder); ``--help`` exits as Hydra says.
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
        return report(err)
    finally:
        sys.argv = saved
        if saved_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full
    return status
