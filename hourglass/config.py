"""Where the Hydra configs live and how commands outside Hydra read their defaults."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hourglass.errors import AlposeError


def config_dir() -> Path:
    """The ``configs/`` folder of the checkout (or ``$ALPOSE_CONFIGS``)."""
    path = Path(os.environ.get("ALPOSE_CONFIGS", Path(__file__).resolve().parents[1] / "configs"))
    if not path.is_dir():
        raise AlposeError(
            f"config folder {path} not found; install alpose from its checkout (`pip install -e .`) "
            "or set ALPOSE_CONFIGS"
        )
    return path


def load_group(group: str, name: str) -> DictConfig:
    """One option of a config group, e.g. ``load_group('dataset', 'synthetic')``."""
    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
        raise AlposeError(f"unknown {group} '{name}'; known: {', '.join(known)}")
    return OmegaConf.load(path)
