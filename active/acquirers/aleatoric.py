"""Aleatoric uncertainty (docs/anchor.md 6.6; after Kendall & Gal, NeurIPS 2017).

A head predicts a log-variance s_j per joint; it is trained with the Gaussian negative
log-likelihood of the squared distance r_j between the predicted and the true heatmap argmax
(integer heatmap pixels, last stack): mean over batch and joints of has_target_j (r_j e^{-s_j} + s_j) / 2.
An image scores mean_j s_j; the highest are labelled next. anchor_bugs (B14): keep = the head's
learning rate never decays; fix = it decays with the pose net's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from active.acquirers.base import AcquisitionContext, RankingAcquirer, keeps_anchor_bugs
from active.acquirers.heads import HeadKind, build_head
from hourglass.datasets.cache import PoseCache
from hourglass.train import AuxBatch, AuxiliaryHead


def argmax_xy(heatmaps: Tensor) -> Tensor:
    """Integer (x, y) of each map's maximum: (B, J, H, W) -> (B, J, 2) float."""
    cols = heatmaps.shape[-1]
    flat = heatmaps.flatten(-2).argmax(dim=-1)
    return torch.stack([flat % cols, flat // cols], dim=-1).float()


def aleatoric_nll(
    log_var: Tensor, predicted: Tensor, targets: Tensor, has_target: Tensor
) -> Tensor:
    """The anchor's NLL: log_var (B, J); predicted, targets (B, J, H, W); has_target (B, J)."""
    r = ((argmax_xy(predicted) - argmax_xy(targets)) ** 2).sum(dim=-1)
    terms = 0.5 * r * torch.exp(-log_var) + 0.5 * log_var
    return (terms * has_target.float()).mean()


class AleatoricAcquirer(RankingAcquirer):
    """Highest mean predicted log-variance first; ``last_scores`` are the picks' mean log-variances."""

    def __init__(
        self,
        head: HeadKind = "conv",
        weight: float = 1.0,
        head_epochs: int | None = None,
        anchor_bugs: str = "auto",
    ) -> None:
        keeps_anchor_bugs(anchor_bugs, "paper")  # validates the value
        self.head, self.weight, self.head_epochs = head, float(weight), head_epochs
        self.anchor_bugs = anchor_bugs

    @staticmethod
    def loss(log_var: Tensor, sample_loss: Tensor, batch: AuxBatch) -> Tensor:
        """NLL of the batch's argmax errors under the predicted per-joint variances."""
        return aleatoric_nll(log_var, batch.output.last, batch.targets, batch.has_target)

    def auxiliary_head(self, model: nn.Module, data: PoseCache, protocol: str) -> AuxiliaryHead:
        """A fresh per-joint log-variance head and its NLL."""
        return AuxiliaryHead(
            name="aleatoric",
            module=build_head(self.head, model, data, data.num_joints),
            loss=self.loss,
            weight=self.weight,
            with_batch=True,
            decay_lr=not keeps_anchor_bugs(self.anchor_bugs, protocol),
        )

    def scores(self, ctx: AcquisitionContext, indices: np.ndarray) -> np.ndarray:
        """Mean predicted log-variance over joints of each row of ``indices``."""
        return ctx.infer(indices, aux=True).aux.float().mean(dim=1).cpu().numpy()
