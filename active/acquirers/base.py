"""The acquirer interface (in the spirit of baal's and modAL's strategies: one object, one method).

An acquirer sees the model only through :class:`AcquisitionContext`: the pool indices, a batched
``infer`` (no augmentation, on the device, with a progress bar) and a seeded random generator.
A new acquirer is a class with ``select`` plus ``configs/acquirer/<name>.yaml`` whose ``_target_``
names it; ``acquirer._target_=my.module.Class`` works from the command line too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from hourglass.datasets.cache import PoseCache
from hourglass.evaluate import iterate_outputs
from hourglass.losses import LossKind, to_heatmaps


@dataclass
class Inference:
    """Outputs of :meth:`AcquisitionContext.infer` for ``indices``, row-aligned, on the device.

    heatmaps: (N, J, H, W) last-stack heatmaps (non-negative, as decoded); embedding: (N, C) pooled
    features; pyramid: (N, sum of C) global averages of the last hourglass's multi-scale maps
    (coarsest first); aux: (N, ...) the auxiliary head's output. Missing ones are None.
    """

    indices: np.ndarray
    heatmaps: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    pyramid: torch.Tensor | None = None
    aux: torch.Tensor | None = None


@dataclass
class AcquisitionContext:
    """What an acquirer may use. ``labelled`` and ``unlabelled`` are cache row indices (disjoint)."""

    model: nn.Module
    data: PoseCache
    labelled: np.ndarray
    unlabelled: np.ndarray
    rng: np.random.Generator
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    loss: LossKind = "mse"
    batch_size: int = 64
    aux_head: nn.Module | None = None
    progress: bool = True

    def infer(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        heatmaps: bool = False,
        embedding: bool = False,
        pyramid: bool = False,
        aux: bool = False,
        flip: bool = False,
    ) -> Inference:
        """Run the model (and the auxiliary head) over ``indices`` in eval mode, batched."""
        indices = np.asarray(indices, dtype=np.int64)
        parts: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("heatmaps", "embedding", "pyramid", "aux")
        }
        if aux and self.aux_head is None:
            raise ValueError("aux outputs asked for, but this model has no auxiliary head")
        if self.aux_head is not None:
            self.aux_head.eval()
        for _, out in iterate_outputs(
            self.model,
            self.data,
            indices,
            batch_size=self.batch_size,
            device=self.device,
            flip=flip,
            progress="score pool" if self.progress else None,
        ):
            if heatmaps:
                parts["heatmaps"].append(to_heatmaps(out.last, self.loss))
            if embedding:
                parts["embedding"].append(out.embedding.float())
            if pyramid:
                parts["pyramid"].append(
                    torch.cat([p.float().mean(dim=(2, 3)) for p in out.pyramid], 1)
                )
            if aux:
                with torch.no_grad():
                    parts["aux"].append(self.aux_head(out.detach()).float())
        joined = {k: torch.cat(v) if v else None for k, v in parts.items()}
        return Inference(indices, **joined)


@runtime_checkable
class Acquirer(Protocol):
    """Chooses ``k`` rows of ``ctx.unlabelled`` to label next."""

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """Return ``k`` distinct indices drawn from ``ctx.unlabelled`` (most wanted first)."""
        ...
