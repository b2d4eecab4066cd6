"""Torch threads and devices of the processes of one ``alpose run``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from active.loop.sweep import available_cores
from hourglass.numerics import cpu_threads


def runs_on_cuda(device: str) -> bool:
    """Whether a run with ``device`` (auto, cpu, cuda[:i]) trains on a GPU here."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def job_threads(cfg: DictConfig, default: int) -> int:
    """Torch threads of one process of this run: ``threads`` when set; else one on a CPU under
    portable numerics (``hourglass/numerics.py``), else ``default``."""
    mode = "native" if runs_on_cuda(str(cfg.device)) else str(cfg.get("numerics", "native"))
    return cpu_threads(mode, cfg.get("threads"), default)


def worker_threads(cfg: DictConfig) -> int:
    """Torch threads of each of the ``jobs=N`` worker processes (default: cores // N)."""
    return job_threads(cfg, available_cores() // max(1, int(cfg.jobs)))
