"""Small, seeded fits for the training tests."""

from __future__ import annotations

import torch

from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig, fit


def small_config(**overrides) -> TrainConfig:
    base = dict(
        epochs=1,
        batch_size=32,
        lr=1e-3,
        loss="ce",
        sigma=1.0,
        peak=1.0,
        select_by="pckh",
        device="cpu",
        eval_batch_size=128,
    )
    return TrainConfig(**{**base, **overrides})


def tiny_fit(data, n_train: int, n_select: int, **overrides):
    """A seeded 8-channel, 1-stack model fitted on the first training and validation rows of
    ``data`` with ``small_config(batch_size=8, **overrides)``: (model, FitResult)."""
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, 16)
    cfg = small_config(**{"batch_size": 8, **overrides})
    rows, select = data.indices("train")[:n_train], data.indices("val")[:n_select]
    return model, fit(model, data, rows, select, cfg, progress=False)
