"""Run a Hydra application from inside ``alpose <command>``, with alpose's error convention."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from omegaconf import DictConfig

from hourglass.config import config_dir
from hourglass.errors import AlposeError


def run_hydra(
    command: str, config_name: str, argv: Sequence[str], task: Callable[[DictConfig], object]
) -> int:
    """Compose ``configs/<config_name>.yaml`` with ``argv`` as overrides and call ``task(cfg)``.

    Returns the exit status: 0, 2 after one ``error:`` line for an :class:`AlposeError`, or Hydra's
    own status for its usage errors (an unknown override, ``--help``).
    """
    import hydra

    status = 0

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        nonlocal status
        try:
            task(cfg)
        except AlposeError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2

    saved = sys.argv
    sys.argv = [f"alpose {command}", *argv]
    try:
        _main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return status
