"""Core-Set by k-center greedy on the pooled embedding (docs/anchor.md 6.2; Sener & Savarese, ICLR 2018).

Every unlabelled point starts at its Euclidean distance to the nearest labelled point; each pick
takes the farthest point (ties: lowest position) and lowers every distance by the new centre.
Unlike the anchor, the initial distances are taken a chunk of centres at a time, so memory stays
O(pool x chunk) instead of a full pool x labelled matrix. Points are centred on the pool mean first:
ReLU features share a large offset, and float32 ``cdist`` (matrix-product form) loses digits to it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from active.acquirers.base import AcquisitionContext


def squared_distances(pool: Tensor, centres: Tensor) -> Tensor:
    """(U, C) squared Euclidean distances in cdist's matrix-product form, |x|^2 + |y|^2 - 2xy.

    Squared, because k-center greedy only compares distances: this skips torch's CPU square root,
    which is not exactly rounded and whose last bits depend on the CPU (hourglass/train.adam).
    """
    cross = pool @ centres.T
    return (pool.square().sum(1, keepdim=True) + centres.square().sum(1) - 2 * cross).clamp_min_(0)


def nearest_centre_sq_distance(pool: Tensor, centres: Tensor, chunk: int = 4096) -> Tensor:
    """(U,) squared distance of each pool row to its nearest centre, ``chunk`` centres at a time
    (inf if none)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    best = torch.full((pool.shape[0],), float("inf"), dtype=pool.dtype, device=pool.device)
    for start in range(0, centres.shape[0], chunk):
        block = squared_distances(pool, centres[start : start + chunk])
        best = torch.minimum(best, block.min(dim=1).values)
    return best


def nearest_centre_distance(pool: Tensor, centres: Tensor, chunk: int = 4096) -> Tensor:
    """(U,) distance of each pool row to its nearest centre (inf if none)."""
    return nearest_centre_sq_distance(pool, centres, chunk).double().sqrt().to(pool.dtype)


def k_center_greedy(
    pool: Tensor, centres: Tensor, k: int, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``k`` rows of ``pool`` (U,D) by k-center greedy from ``centres`` (L,D).

    Returns (positions into ``pool`` in pick order, each pick's distance to its nearest centre at
    pick time). With no centres the first pick is position 0 with score inf.
    """
    if pool.ndim != 2 or centres.ndim != 2 or (len(centres) and centres.shape[1] != pool.shape[1]):
        raise ValueError(
            f"pool {tuple(pool.shape)} and centres {tuple(centres.shape)} must be (N, D)"
        )
    if not 0 <= k <= pool.shape[0]:
        raise ValueError(f"k={k} outside [0, {pool.shape[0]}] (the pool size)")
    offset = pool.mean(dim=0)  # centring keeps cdist's |x|^2 + |y|^2 - 2xy from cancelling
    pool, centres = pool - offset, centres.to(pool) - offset
    min_sq = nearest_centre_sq_distance(pool, centres, chunk)  # squared throughout: same order
    picks = torch.empty(k, dtype=torch.long, device=pool.device)
    scores = torch.empty(k, dtype=pool.dtype, device=pool.device)
    for i in range(k):  # each step is vectorised over the pool and stays on the device (no sync)
        pick = torch.argmax(min_sq)  # first maximum: the lowest position wins ties
        picks[i], scores[i] = pick, min_sq[pick]
        step = (pool - pool[pick]).square().sum(dim=1)
        min_sq = torch.minimum(min_sq, step)
        min_sq[pick] = float("-inf")  # never picked twice, even among exact duplicates
    # the distances of the picks, square-rooted in float64 (exactly rounded on every CPU)
    return picks.cpu().numpy(), np.sqrt(scores.double().cpu().numpy()).astype(np.float32)


class CoreSetAcquirer:
    """k-center greedy on ``PoseOutput.embedding`` of the labelled and unlabelled rows.

    ``batch_size`` overrides ``ctx.batch_size`` for inference; ``chunk`` bounds the centres per
    distance block. ``last_scores`` holds each pick's min-distance at pick time.
    ``features="multiscale"`` (not the anchor's) adds the pooled pyramid maps to the embedding,
    each block scaled to unit mean norm so that every scale weighs the same.
    """

    def __init__(
        self, batch_size: int | None = None, chunk: int = 4096, features: str = "embedding"
    ) -> None:
        if features not in ("embedding", "multiscale"):
            raise ValueError(f"features must be 'embedding' or 'multiscale', got {features!r}")
        self.batch_size = batch_size
        self.chunk = chunk
        self.features = features
        self.last_scores: np.ndarray = np.zeros(0)

    def embed(self, ctx: AcquisitionContext) -> tuple[Tensor, Tensor]:
        """(unlabelled, labelled) embeddings on ``ctx.device``, from one inference pass."""
        if self.batch_size is not None:
            ctx = dataclasses.replace(ctx, batch_size=self.batch_size)
        unlabelled = np.asarray(ctx.unlabelled, dtype=np.int64)
        rows = np.concatenate([unlabelled, np.asarray(ctx.labelled, dtype=np.int64)])
        if self.features == "embedding":
            emb = ctx.infer(rows, embedding=True).embedding
        else:
            out = ctx.infer(rows, embedding=True, pyramid=True)
            blocks = [out.embedding, *out.pyramid.split(out.embedding.shape[1], dim=1)]
            emb = torch.cat([b / b.norm(dim=1).mean().clamp_min(1e-12) for b in blocks], dim=1)
        return emb[: len(unlabelled)], emb[len(unlabelled) :]

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """Return ``min(k, len(ctx.unlabelled))`` unlabelled cache indices in pick order."""
        unlabelled = np.asarray(ctx.unlabelled, dtype=np.int64)
        k = min(int(k), len(unlabelled))
        if k == 0:
            self.last_scores = np.zeros(0, dtype=np.float32)
            return unlabelled[:0]
        pool, centres = self.embed(ctx)
        positions, self.last_scores = k_center_greedy(pool, centres, k, self.chunk)
        return unlabelled[positions]
