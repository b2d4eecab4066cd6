"""Learning Loss (Yoo & Kweon, CVPR 2019) and LearningLoss++ (Shukla & Ahmed, CVPR-W 2021).

A head predicts each image's pose loss from the pose net's detached multi-scale features; the
unlabelled images with the highest predicted loss are labelled next (docs/anchor.md 6.4-6.5). Training
pairs a batch's first half with its second, (i, i + B/2), and uses the anchor's per-sample loss:
the pose loss (mean over stacks) divided by (n + 0.1), n = the joints with a target (annotated,
occluded ones included). Keeping the anchor's behaviour (``anchor_bugs``), n counts only the
visible joints on LSP/LSPET (torso-normalised caches), as the anchor's LSP loaders do; on MPII the
two counts agree.

margin (Learning Loss): mean over pairs of max(0, xi - sign(l_i - l_j) (lhat_i - lhat_j)), xi = 1.
kl (LearningLoss++): mean over pairs of KL(p || q), p = (l_i, l_j) / (l_i + l_j), q =
softmax(lhat_i, lhat_j); its gradient in lhat_i is (q_i - p_i) / pairs (docs/acquirers.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from active.acquirers.base import AcquisitionContext, RankingAcquirer, keeps_anchor_bugs
from active.acquirers.heads import HeadKind, build_head
from hourglass.datasets.cache import PoseCache
from hourglass.evaluate import iterate_outputs
from hourglass.train import AuxBatch, AuxiliaryHead, TrainConfig, eval_losses

Objective = Literal["margin", "kl"]


def pair_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x[:B//2], x[B//2 : 2*(B//2)]): the anchor's pairs (i, i + B/2); an odd last row is unused."""
    half = x.shape[0] // 2
    return x[:half], x[half : 2 * half]


def normalised_loss(sample_loss: Tensor, counted: Tensor | None) -> Tensor:
    """The anchor's per-sample target l / (n + 0.1), n = the joints ``counted`` (B, J) bool
    (docs/anchor.md 6.4); ``counted=None`` leaves the loss as it is."""
    if counted is None:
        return sample_loss
    return sample_loss / (counted.float().sum(dim=1) + 0.1)


def margin_ranking_loss(predicted: Tensor, true: Tensor, margin: float = 1.0) -> Tensor:
    """Yoo & Kweon's loss on pairs (i, i + B/2): mean max(0, margin - sign(l_i - l_j)(lhat_i - lhat_j))."""
    pi, pj = pair_halves(predicted)
    ti, tj = pair_halves(true)
    if pi.numel() == 0:
        return predicted.sum() * 0.0
    hinge = margin - torch.sign(ti - tj) * (pi - pj)  # sign(0) = 0: ties cost the margin
    return hinge.clamp_min(0).mean()


def pair_kl_loss(predicted: Tensor, true: Tensor) -> Tensor:
    """LearningLoss++ on pairs (i, i + B/2): mean KL(p || softmax(lhat_i, lhat_j))."""
    pi, pj = pair_halves(predicted)
    ti, tj = pair_halves(true)
    if pi.numel() == 0:
        return predicted.sum() * 0.0
    t = torch.stack([ti, tj], dim=1).clamp_min(0)
    p = t / t.sum(dim=1, keepdim=True).clamp_min(1e-30)
    p = torch.where(t.sum(dim=1, keepdim=True) > 0, p, torch.full_like(p, 0.5))
    log_q = torch.log_softmax(torch.stack([pi, pj], dim=1), dim=1)
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()


@torch.no_grad()
def true_and_predicted_losses(
    model: nn.Module,
    data: PoseCache,
    indices: np.ndarray,
    cfg: TrainConfig,
    heads: dict[str, nn.Module],
    device: torch.device,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each row's true pose loss (eval mode, no augmentation) and each head's prediction of it."""
    losses, preds = [], {name: [] for name in heads}
    for head in heads.values():
        head.to(device).eval()
    for idx, out in iterate_outputs(
        model, data, indices, batch_size=cfg.eval_batch_size, device=device
    ):
        losses.append(eval_losses(out, data, idx, cfg, device).cpu())
        for name, head in heads.items():
            preds[name].append(head(out).float().cpu())
    return torch.cat(losses).numpy(), {k: torch.cat(v).numpy() for k, v in preds.items()}


class LearningLossAcquirer(RankingAcquirer):
    """Highest predicted loss first; ``objective`` margin (Learning Loss) or kl (LearningLoss++).

    ``head``: conv (anchor) or pooled (Yoo & Kweon). ``anchor_bugs`` (B14): keep = the head's
    learning rate never decays; fix = it decays with the pose net's. ``head_epochs``: the cycle-0
    head pass (null: the experiment's epochs_later). ``last_scores``: the picks' predicted losses.
    """

    def __init__(
        self,
        objective: Objective = "kl",
        head: HeadKind = "conv",
        margin: float = 1.0,
        normalise: bool = True,
        weight: float = 1.0,
        head_epochs: int | None = None,
        anchor_bugs: str = "auto",
    ) -> None:
        if objective not in ("margin", "kl"):
            raise ValueError(f"objective must be 'margin' or 'kl', got {objective!r}")
        keeps_anchor_bugs(anchor_bugs, "paper")  # validates the value
        self.objective, self.head, self.margin = objective, head, float(margin)
        self.normalise, self.weight, self.head_epochs = normalise, float(weight), head_epochs
        self.anchor_bugs = anchor_bugs

    def loss(
        self, predicted: Tensor, sample_loss: Tensor, batch: AuxBatch, visible_only: bool = False
    ) -> Tensor:
        """The head's training loss for one batch (n of l / (n + 0.1): the joints with a target,
        or the visible ones only when ``visible_only``)."""
        counted = batch.visible if visible_only else batch.has_target
        true = normalised_loss(sample_loss, counted if self.normalise else None)
        if self.objective == "margin":
            return margin_ranking_loss(predicted, true, self.margin)
        return pair_kl_loss(predicted, true)

    def auxiliary_head(self, model: nn.Module, data: PoseCache, protocol: str) -> AuxiliaryHead:
        """A fresh loss-prediction head (one output) and its loss."""
        keep = keeps_anchor_bugs(self.anchor_bugs, protocol)
        visible_only = keep and data.normaliser_kind == "torso"  # the anchor's LSP/LSPET count

        def loss(predicted: Tensor, sample_loss: Tensor, batch: AuxBatch) -> Tensor:
            return self.loss(predicted, sample_loss, batch, visible_only)

        return AuxiliaryHead(
            name="learning_loss",
            module=build_head(self.head, model, data, 1),
            loss=loss,
            weight=self.weight,
            with_batch=True,
            decay_lr=not keep,
        )

    def scores(self, ctx: AcquisitionContext, indices: np.ndarray) -> np.ndarray:
        """The head's predicted loss of each row of ``indices``."""
        return ctx.infer(indices, aux=True).aux.float().reshape(-1).cpu().numpy()
