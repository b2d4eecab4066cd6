"""VL4Pose (Shukla et al., BMVC 2022; docs/anchor.md 6.8): skeleton likelihood from a link-length head.

A head predicts, per skeleton link l, a mean length mu_l and a log-variance s_l (heatmap pixels);
it is trained with the Gaussian NLL of the true link length (distance between the ground-truth
heatmaps' argmaxes), mean over batch and links of both-ends-present (mu - d)^2 e^{-s} / 2 + s / 2.
To score an image, every joint keeps up to ``num_peaks`` heatmap peaks (``min_distance`` apart) with
peak probabilities, and the skeleton tree rooted at the head is scored by dynamic programming:
log p(parent candidate) + for each child link, combined over the child's candidates, of
[log N(|x_p - x_c|; mu, e^s) + log p(child candidate) + the child's own subtree]. The images of
lowest likelihood are labelled next.

anchor_bugs (B11): keep = peaks within ``min_distance`` of the border are ignored and candidate
terms are summed (the anchor's np.sum); fix = border peaks count and candidates are combined by
their maximum (the anchor's visualisation copy). Either way a joint with no peak falls back to its
map's maximum instead of crashing, and the peak probabilities follow multipeak's rule (softmax
when keeping the bugs, normalised values when fixing them; with one peak both are 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from active.acquirers.aleatoric import argmax_xy
from active.acquirers.base import AcquisitionContext, RankingAcquirer, keeps_anchor_bugs
from active.acquirers.heads import HeadKind, build_head
from active.acquirers.peaks import local_peaks, peak_probabilities
from hourglass.datasets.cache import PoseCache
from hourglass.errors import AlposeError
from hourglass.joints import skeleton_links as joint_links
from hourglass.train import AuxBatch, AuxiliaryHead

LOG_2PI = math.log(2 * math.pi)


def skeleton_links(num_joints: int) -> tuple[tuple[int, int], ...]:
    """(parent, child) links of the skeleton tree, parents before children (MPII 16, LSP 14)."""
    try:
        return joint_links(num_joints)
    except ValueError as err:
        raise AlposeError(f"VL4Pose: {err}") from err


def link_lengths(xy: Tensor, links: tuple[tuple[int, int], ...]) -> Tensor:
    """(B, L) distances between the linked joints of xy (B, J, 2)."""
    parent, child = (torch.tensor(c, device=xy.device) for c in zip(*links, strict=True))
    return torch.linalg.vector_norm(xy[:, parent] - xy[:, child], dim=-1)


def link_nll(
    mu: Tensor, log_var: Tensor, targets: Tensor, has_target: Tensor, links: tuple
) -> Tensor:
    """The anchor's NLL of the true link lengths (from the target maps' argmaxes); (B, L) inputs."""
    d = link_lengths(argmax_xy(targets), links)
    parent, child = (list(c) for c in zip(*links, strict=True))
    present = (has_target[:, parent] & has_target[:, child]).float()
    terms = 0.5 * (mu - d) ** 2 * torch.exp(-log_var) + 0.5 * log_var
    return (terms * present).mean()


def tree_log_likelihood(
    xy: Tensor,
    log_p: Tensor,
    valid: Tensor,
    mu: Tensor,
    log_var: Tensor,
    links: tuple[tuple[int, int], ...],
    combine: str = "max",
) -> Tensor:
    """(N,) skeleton log-likelihood over candidate joints by dynamic programming from the leaves.

    xy (N, J, K, 2) candidate positions, log_p (N, J, K) their log peak probabilities, valid
    (N, J, K) which slots hold a candidate (every joint needs at least one), mu and log_var (N, L).
    ``combine`` pools a joint's candidates: ``max`` or ``sum`` (of log-likelihoods, the anchor's).
    """
    if combine not in ("max", "sum"):
        raise ValueError(f"combine must be 'max' or 'sum', got {combine!r}")
    xy = xy.float()
    below = torch.zeros_like(
        log_p
    )  # log-likelihood of each candidate's subtree (own term excluded)

    def pool(values: Tensor, mask: Tensor) -> Tensor:  # over the last dim, valid slots only
        if combine == "max":
            return values.masked_fill(~mask, -math.inf).amax(dim=-1)
        return values.masked_fill(~mask, 0.0).sum(dim=-1)

    for link in reversed(range(len(links))):
        p, c = links[link]
        d = torch.linalg.vector_norm(xy[:, p, :, None] - xy[:, c, None, :], dim=-1)  # (N, Kp, Kc)
        s, m = log_var[:, link, None, None], mu[:, link, None, None]
        gauss = -0.5 * (LOG_2PI + s + (m - d) ** 2 * torch.exp(-s))
        child = gauss + (log_p[:, c] + below[:, c])[:, None, :]
        below[:, p] = below[:, p] + pool(child, valid[:, c, None, :].expand_as(child))
    children = {c for _, c in links}
    root = next(j for j in range(xy.shape[1]) if j not in children)
    return pool(log_p[:, root] + below[:, root], valid[:, root])


class VL4PoseAcquirer(RankingAcquirer):
    """Lowest skeleton likelihood first; ``last_scores`` are the picks' log-likelihoods."""

    highest = False

    def __init__(
        self,
        head: HeadKind = "conv",
        num_peaks: int = 1,
        min_distance: int = 8,
        weight: float = 1.0,
        head_epochs: int | None = None,
        anchor_bugs: str = "auto",
        chunk: int = 2048,
    ) -> None:
        keeps_anchor_bugs(anchor_bugs, "paper")  # validates the value
        self.head, self.num_peaks, self.min_distance = head, int(num_peaks), int(min_distance)
        self.weight, self.head_epochs, self.anchor_bugs = float(weight), head_epochs, anchor_bugs
        self.chunk = int(chunk)

    def auxiliary_head(self, model: nn.Module, data: PoseCache, protocol: str) -> AuxiliaryHead:
        """A fresh link-length head (mean and log-variance per link) and its NLL."""
        links = skeleton_links(data.num_joints)
        n = len(links)

        def loss(out: Tensor, sample_loss: Tensor, batch: AuxBatch) -> Tensor:
            return link_nll(out[:, :n], out[:, n:], batch.targets, batch.has_target, links)

        return AuxiliaryHead(
            name="vl4pose",
            module=build_head(self.head, model, data, 2 * n),
            loss=loss,
            weight=self.weight,
            with_batch=True,
            decay_lr=not keeps_anchor_bugs(self.anchor_bugs, protocol),
        )

    def scores(self, ctx: AcquisitionContext, indices: np.ndarray) -> np.ndarray:
        """Skeleton log-likelihood of each row of ``indices``."""
        links = skeleton_links(ctx.data.num_joints)
        n = len(links)
        keep = keeps_anchor_bugs(self.anchor_bugs, ctx.protocol)
        border = self.min_distance if keep else 0
        parts = []
        for out in ctx.infer_chunks(indices, self.chunk, heatmaps=True, aux=True):
            peaks = local_peaks(
                out.heatmaps, self.min_distance, self.num_peaks, border, fallback_argmax=True
            )
            p = peak_probabilities(peaks, "softmax" if keep else "normalise")
            log_p = torch.log(p.clamp_min(1e-30))
            aux = out.aux.float()
            parts.append(
                tree_log_likelihood(
                    peaks.xy,
                    log_p,
                    peaks.valid,
                    aux[:, :n],
                    aux[:, n:],
                    links,
                    "sum" if keep else "max",
                )
            )
        return torch.cat(parts).cpu().numpy() if parts else np.zeros(0, np.float32)
