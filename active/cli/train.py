"""``alpose train [overrides]``: fit one stacked hourglass and report PCKh (a Hydra application)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hourglass.hydra_app import run_hydra


def _task(cfg: DictConfig) -> None:
    """Hydra's task: the training job, in the run folder Hydra made."""
    from hourglass.train_run import run_training  # loads torch: only after numerics are applied

    run_training(cfg, Path(HydraConfig.get().runtime.output_dir))


def main(argv: Sequence[str]) -> int:
    """``alpose train [overrides]``; returns the exit status."""
    return run_hydra("train", "train", argv, _task)
