"""The acquirer interface (in the spirit of baal's and modAL's strategies: one object, one method).

An acquirer sees the model only through :class:`AcquisitionContext`: the pool indices, a batched
``infer`` (no augmentation, on the device, with a progress bar) and a seeded random generator.
A new acquirer is a class with ``select`` plus ``configs/acquirer/<name>.yaml`` whose ``_target_``
names it; ``acquirer._target_=my.module.Class`` works from the command line too.

Auxiliary heads (Learning Loss, aleatoric, VL4Pose): an acquirer that also has
``auxiliary_head(model, data, protocol) -> hourglass.train.AuxiliaryHead`` (see
:class:`AuxiliaryAcquirer`) gets that head trained beside the pose net in every cycle's ``fit``
(stop-gradient, same run), checkpointed with the pose weights and warm-started with them; its
trained module is ``ctx.aux_head`` in ``select``. For cycle 0, which every acquirer of a seed
shares, the head is trained on the frozen shared model for ``head_epochs`` epochs (null: the
experiment's ``epochs_later``), so the pose weights stay identical across acquirers.

Anchor bugs: ``anchor_bugs="auto"`` keeps the anchor's behaviour under ``protocol=paper`` and fixes
it otherwise; ``"keep"`` and ``"fix"`` force either (:func:`keeps_anchor_bugs`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from hourglass.datasets.cache import PoseCache
from hourglass.evaluate import iterate_outputs
from hourglass.losses import LossKind, to_heatmaps
from hourglass.model import PoseOutput
from hourglass.train import AuxiliaryHead


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
    protocol: str = "standard"
    # bf16 autocast for this acquirer's inference; off (fp32) unless its config asks (``amp:
    # true``), whatever training used: bf16 rounding ties heatmap peaks and moves embeddings.
    amp: bool = False

    @classmethod
    def for_training(
        cls,
        model: nn.Module,
        data: PoseCache,
        labelled: np.ndarray,
        unlabelled: np.ndarray,
        rng: np.random.Generator,
        device: torch.device,
        train_cfg: Any,
        aux_head: nn.Module | None = None,
        progress: bool = False,
        protocol: str = "standard",
        amp: bool = False,
    ) -> AcquisitionContext:
        """The context of a cycle trained with ``train_cfg`` (its loss and evaluation batch size);
        the model and head are moved to ``device``. One constructor for the runner, the report's
        re-scoring and the bench."""
        return cls(
            model=model.to(device),
            data=data,
            labelled=labelled,
            unlabelled=unlabelled,
            rng=rng,
            device=device,
            loss=train_cfg.loss,
            batch_size=train_cfg.eval_batch_size,
            aux_head=aux_head.to(device) if aux_head is not None else None,
            progress=progress,
            protocol=protocol,
            amp=amp,
        )

    def outputs(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        flip: bool = False,
        progress: str | None = None,
    ) -> Iterator[tuple[np.ndarray, PoseOutput]]:
        """(batch rows, model output) over ``indices`` in eval mode, at the acquirer's precision
        (fp32 unless ``amp``): every acquirer's inference goes through here."""
        return iterate_outputs(
            self.model,
            self.data,
            indices,
            batch_size=self.batch_size,
            device=self.device,
            flip=flip,
            progress=progress,
            amp=self.amp,
            amp_cpu=self.amp,
        )

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
        for _, out in self.outputs(
            indices, flip=flip, progress="score pool" if self.progress else None
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

    def infer_chunks(
        self, indices: Sequence[int] | np.ndarray, chunk: int, **what: bool
    ) -> Iterator[Inference]:
        """:meth:`infer` over ``chunk`` rows at a time (memory O(chunk) for heatmap scorers)."""
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), max(1, int(chunk))):
            yield self.infer(indices[start : start + chunk], **what)


def keeps_anchor_bugs(anchor_bugs: str, protocol: str) -> bool:
    """Whether to reproduce the anchor's bugs: ``keep``, ``fix``, or ``auto`` (keep iff paper)."""
    if anchor_bugs not in ("auto", "keep", "fix"):
        raise ValueError(f"anchor_bugs must be auto, keep or fix, got {anchor_bugs!r}")
    return anchor_bugs == "keep" or (anchor_bugs == "auto" and protocol == "paper")


def top_k(scores: np.ndarray, k: int, highest: bool = True) -> np.ndarray:
    """Positions of the ``k`` highest (or lowest) scores, best first; ties: lowest position."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores if highest else scores, kind="stable")
    return order[: min(int(k), len(scores))]


class RankingAcquirer:
    """Base for acquirers that score every unlabelled row and take the ``k`` best.

    Subclasses implement ``scores(ctx, indices) -> (N,) array`` and set ``highest`` (False: the
    lowest scores are wanted, e.g. likelihoods). ``last_scores`` holds the picks' scores.
    """

    highest: bool = True
    last_scores: np.ndarray = np.zeros(0)

    def scores(self, ctx: AcquisitionContext, indices: np.ndarray) -> np.ndarray:
        """One score per row of ``indices``."""
        raise NotImplementedError

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """The ``k`` unlabelled rows ranked first by ``scores`` (ties: lowest row first)."""
        pool = np.asarray(ctx.unlabelled, dtype=np.int64)
        scores = np.asarray(self.scores(ctx, pool)) if len(pool) else np.zeros(0)
        picks = top_k(scores, k, highest=self.highest)
        self.last_scores = scores[picks]
        return pool[picks]


@runtime_checkable
class Acquirer(Protocol):
    """Chooses ``k`` rows of ``ctx.unlabelled`` to label next."""

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """Return ``k`` distinct indices drawn from ``ctx.unlabelled`` (most wanted first)."""
        ...


@runtime_checkable
class AuxiliaryAcquirer(Acquirer, Protocol):
    """An acquirer that scores with an auxiliary head trained beside the pose net."""

    head_epochs: int | None  # epochs of the cycle-0 head pass on the frozen shared model

    def auxiliary_head(self, model: nn.Module, data: PoseCache, protocol: str) -> AuxiliaryHead:
        """A freshly initialised head (and its loss) for ``model`` on ``data`` (seeded by caller)."""
        ...
