"""EGL++ (Shukla & Ahmed, WACV 2022; docs/anchor.md 6.7): expected gradient length over labelled neighbours.

An unlabelled image u scores Σ_j p(l_j|u) · ‖∇θ loss(x_u, t_j)‖² over its k = 30 nearest labelled
images l_j in the pooled embedding, with t_j = l_j's own predicted heatmaps (every stack; the
anchor's default) or its ground truth (``targets="gt"``), and the highest scores are labelled.
p(l|u) ∝ exp(−‖e_u − e_l‖² / 2σ_u²) over the whole labelled set (terms clamped to [1e-20, 1], then
[1e-30, 1] after normalising, as the anchor), with σ_u found per row by bisection until the row's
perplexity is within ``tolerance`` of ``perplexity`` (bracket [0, 5·max(max D², max D)], at most
``max_iter`` halvings); the top-k weights are not renormalised.

anchor_bugs (B9, B17): keep = perplexity 2^H with H in nats (effective standard perplexity ≈ 75
for 20) and the gradient over Conv2d/Linear parameters only; fix = the standard e^H and BatchNorm's
γ, β included. ``perplexity_base`` and ``include_bn`` override either choice.

The gradients are exact and batched (:func:`per_target_sq_grad_norms`, one forward per image).
Memory: the pool is scored ``chunk`` images at a time (distances chunk x labelled, never pool x
labelled); the labelled targets stay in RAM up to ``target_memory_mb`` and otherwise go to a
temporary float32 memory-mapped file (the anchor keeps them all in RAM: ≈ 2.6 GB at 5,000).
``scope="last"`` is the cheap last-layer approximation (``egl_grads``).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from active.acquirers.base import AcquisitionContext, keeps_anchor_bugs, top_k
from active.acquirers.egl_grads import (
    Scope,
    per_target_sq_grad_norms,
    reference_sq_grad_norms,
    sq_grad_norms_of_cotangents,
)
from hourglass.datasets.views import model_images, target_joints
from hourglass.evaluate import images_to_tensor
from hourglass.heatmaps import gaussian_targets, image_to_heatmap

__all__ = [
    "EGLPlusPlusAcquirer",
    "neighbour_weights",
    "per_target_sq_grad_norms",
    "perplexity",
    "reference_sq_grad_norms",
    "sq_grad_norms_of_cotangents",
]


def perplexity(p: Tensor, base: float) -> Tensor:
    """Row perplexity base^H with the entropy H in nats (base 2: the anchor's; base e: standard)."""
    h = -torch.xlogy(p, p).sum(-1)
    return torch.pow(torch.as_tensor(base, dtype=p.dtype), h)


def conditional_probabilities(d2: Tensor, sigma: Tensor) -> Tensor:
    """The anchor's p(l|u) for squared distances (U, L) and per-row σ (U,), with its clamps."""
    terms = torch.exp(-d2 / (2 * sigma[:, None] ** 2)).clamp(1e-20, 1.0)
    return (terms / terms.sum(-1, keepdim=True)).clamp(1e-30, 1.0)


def bisect_sigma(
    d2: Tensor,
    target: float = 20.0,
    tolerance: float = 1e-3,
    base: float = 2.0,
    upper: float | None = None,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    """Per-row σ (U,) whose perplexity is within ``tolerance`` of ``target``, and the perplexities.

    Rows already within tolerance stop moving; rows that cannot reach it (fewer labelled points
    than the target allows) keep the last σ after ``max_iter`` halvings, as in the anchor.
    """
    d2 = d2.double()
    if upper is None:
        upper = 5.0 * max(float(d2.max()), float(d2.max().sqrt()))
    lo = torch.zeros(d2.shape[0], dtype=d2.dtype, device=d2.device)
    hi = torch.full_like(lo, max(upper, 1e-12))
    sigma = (lo + hi) / 2
    perp = perplexity(conditional_probabilities(d2, sigma), base)
    for _ in range(max_iter):
        high, low = perp > target + tolerance, perp < target - tolerance
        if not (high.any() or low.any()):
            break
        hi = torch.where(high, sigma, hi)
        lo = torch.where(low, sigma, lo)
        sigma = (lo + hi) / 2
        perp = perplexity(conditional_probabilities(d2, sigma), base)
    return sigma, perp


def neighbour_weights(
    pool: Tensor,
    labelled: Tensor,
    k: int = 30,
    target: float = 20.0,
    tolerance: float = 1e-3,
    base: float = 2.0,
    chunk: int = 1024,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    """(U, k) positions into ``labelled`` of each pool row's top-k p(l|u), and those weights.

    Distances are taken ``chunk`` pool rows at a time; the bisection bracket uses the global
    maximum distance, as the anchor's one bracket for all rows.
    """
    offset = pool.mean(0) if len(pool) else 0.0  # centring keeps cdist's digits (coreset.py)
    pool, labelled = (pool - offset).double(), (labelled - offset).double()
    k = min(int(k), labelled.shape[0])
    d2max = 0.0
    for start in range(0, pool.shape[0], chunk):
        d2max = max(d2max, float(torch.cdist(pool[start : start + chunk], labelled).max() ** 2))
    upper = 5.0 * max(d2max, math.sqrt(d2max))
    idx, weights = [], []
    for start in range(0, pool.shape[0], chunk):
        d2 = torch.cdist(pool[start : start + chunk], labelled) ** 2
        sigma, _ = bisect_sigma(d2, target, tolerance, base, upper, max_iter)
        p = conditional_probabilities(d2, sigma)
        w, i = torch.topk(p, k, dim=1)
        idx.append(i)
        weights.append(w)
    if not idx:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k, dtype=torch.float64)
    return torch.cat(idx), torch.cat(weights)


MAX_IMAGES_PER_BATCH = 64


def probe_sizes(ctx: AcquisitionContext) -> tuple[tuple[int, ...], int]:
    """(stacked heatmap shape of one image, largest Conv2d output of one image in floats)."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
        for m in ctx.model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    x = images_to_tensor(model_images(ctx.data, np.asarray(ctx.labelled[:1])), ctx.device)
    try:
        with torch.no_grad():
            out = ctx.model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return tuple(out.heatmaps.shape[1:]), max(sizes, default=1)


class _TargetStore:
    """The labelled rows' targets (n, S, J, H, W) float32: in RAM, or in a temporary memmap."""

    def __init__(self, shape: tuple[int, ...], memory_mb: float) -> None:
        self._dir = None
        if math.prod(shape) * 4 <= memory_mb * 2**20:
            self.array = np.zeros(shape, np.float32)
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="alpose-egl-")
            path = Path(self._dir.name) / "targets.f32"
            self.array = np.lib.format.open_memmap(path, "w+", np.float32, shape)

    def close(self) -> None:
        if self._dir is not None:
            del self.array
            self._dir.cleanup()


class EGLPlusPlusAcquirer:
    """Highest EGL++ score first; ``last_scores`` are the picks' scores (see the module docstring)."""

    def __init__(
        self,
        k: int = 30,
        perplexity: float = 20.0,
        tolerance: float = 1e-3,
        max_iter: int = 100,
        targets: str = "predicted",
        perplexity_base: float | str | None = None,
        include_bn: bool | None = None,
        anchor_bugs: str = "auto",
        scope: Scope = "all",
        grad_batch: int | None = None,
        grad_memory_mb: float = 256.0,
        chunk: int = 1024,
        target_memory_mb: float = 1024.0,
        gt_sigma: float = 1.75,
        gt_peak: float = 30.0,
    ) -> None:
        keeps_anchor_bugs(anchor_bugs, "paper")  # validates the value
        if targets not in ("predicted", "gt"):
            raise ValueError(f"targets must be 'predicted' or 'gt', got {targets!r}")
        if scope not in ("all", "last"):
            raise ValueError(f"scope must be 'all' or 'last', got {scope!r}")
        if isinstance(perplexity_base, str):
            if perplexity_base != "e":
                raise ValueError(f"perplexity_base must be 2, 'e' or null, got {perplexity_base!r}")
            perplexity_base = math.e
        self.k, self.perplexity, self.tolerance = int(k), float(perplexity), float(tolerance)
        self.max_iter, self.targets, self.scope = int(max_iter), targets, scope
        self.perplexity_base, self.include_bn, self.anchor_bugs = (
            perplexity_base,
            include_bn,
            anchor_bugs,
        )
        self.grad_batch = int(grad_batch) if grad_batch else None
        self.grad_memory_mb, self.chunk = float(grad_memory_mb), int(chunk)
        self.target_memory_mb, self.gt_sigma, self.gt_peak = target_memory_mb, gt_sigma, gt_peak
        self.last_scores: np.ndarray = np.zeros(0)

    def settings(self, protocol: str) -> tuple[float, bool]:
        """(perplexity base, include BatchNorm) under ``protocol``."""
        keep = keeps_anchor_bugs(self.anchor_bugs, protocol)
        base = (
            self.perplexity_base if self.perplexity_base is not None else (2.0 if keep else math.e)
        )
        include_bn = self.include_bn if self.include_bn is not None else not keep
        return float(base), bool(include_bn)

    def _fill_targets(self, ctx: AcquisitionContext, rows: np.ndarray, store: _TargetStore) -> None:
        """Write each labelled row's target heatmaps (every stack) into ``store``."""
        pos = 0
        for idx, out in ctx.outputs(rows):
            raw = out.heatmaps.float()
            if self.targets == "gt":
                joints = target_joints(ctx.data, ctx.data.joints[idx], ctx.data.visibility[idx])
                xy = image_to_heatmap(
                    torch.from_numpy(joints).float().to(raw.device),
                    ctx.data.image_size,
                    raw.shape[-1],
                )
                present = torch.from_numpy(ctx.data.visibility[idx] >= 0).to(raw.device)
                gt, _ = gaussian_targets(xy, present, raw.shape[-1], self.gt_sigma, self.gt_peak)
                t = gt.unsqueeze(1).expand_as(raw)
            elif ctx.loss == "ce":  # the predicted distribution of every stack
                b, s, j, h, w = raw.shape
                t = torch.softmax(raw.reshape(b, s, j, -1), -1).reshape(raw.shape)
            else:
                t = raw
            store.array[pos : pos + len(idx)] = t.cpu().numpy()
            pos += len(idx)

    def scores(self, ctx: AcquisitionContext, pool: np.ndarray) -> np.ndarray:
        """EGL++ score of each row of ``pool`` against ``ctx.labelled``."""
        labelled = np.asarray(ctx.labelled, dtype=np.int64)
        if len(pool) == 0 or len(labelled) == 0:
            return np.zeros(len(pool), np.float32)
        base, include_bn = self.settings(ctx.protocol)
        emb = ctx.infer(np.concatenate([pool, labelled]), embedding=True).embedding
        nbr, weights = neighbour_weights(
            emb[: len(pool)].cpu(),
            emb[len(pool) :].cpu(),
            self.k,
            self.perplexity,
            self.tolerance,
            base,
            self.chunk,
            self.max_iter,
        )
        shape, largest = probe_sizes(ctx)
        pairs = self.grad_batch or int(self.grad_memory_mb * 2**20 / 4 / largest)
        store = _TargetStore((len(labelled), *shape), self.target_memory_mb)
        try:
            self._fill_targets(ctx, labelled, store)
            per_batch = min(max(1, pairs // max(1, nbr.shape[1])), MAX_IMAGES_PER_BATCH)
            out = np.zeros(len(pool), np.float64)
            starts = range(0, len(pool), per_batch)
            desc = "egl++ gradients" if ctx.progress else None
            for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
                stop = min(start + per_batch, len(pool))
                x = images_to_tensor(model_images(ctx.data, pool[start:stop]), ctx.device)
                rows = nbr[start:stop].numpy()
                t = torch.from_numpy(np.asarray(store.array[rows.ravel()])).to(ctx.device)
                t = t.view(*rows.shape, *shape)
                norms = per_target_sq_grad_norms(
                    ctx.model, x, t, ctx.loss, include_bn, self.scope, max_pairs=pairs
                ).double()
                out[start:stop] = (weights[start:stop].to(norms) * norms).sum(1).cpu().numpy()
        finally:
            store.close()
        return out

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """The ``k`` unlabelled rows with the highest EGL++ score."""
        pool = np.asarray(ctx.unlabelled, dtype=np.int64)
        scores = self.scores(ctx, pool)
        picks = top_k(scores, k, highest=True)
        self.last_scores = scores[picks]
        return pool[picks]
