"""Local maxima of heatmaps, batched on the device (what skimage ``peak_local_max`` finds per map).

A pixel is a candidate when it equals the maximum of its (2d+1)^2 window (max-pooling,
d = min_distance), exceeds the map's minimum (skimage's default ``threshold_abs``) and lies at least
``exclude_border`` pixels from the edge. Then skimage's spacing rule: candidates are taken highest
first (equal values in raster order, row by row) and each one kept drops every later candidate
closer than d (Chebyshev distance < d); the first ``num_peaks`` kept are the peaks. Two candidates
that close are always equal (each lies in the other's window), so the rule only thins plateaus of
equal maxima to one pixel per d. Ties are not rare: bf16 rounding (8 bits of mantissa) makes the
top pixels of a smooth peak equal, and keeping every tied pixel would count one peak as several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

PeakWeights = Literal["softmax", "normalise"]


@dataclass
class Peaks:
    """Up to K peaks per map: values (N, J, K), xy (N, J, K, 2) heatmap pixels, valid (N, J, K)."""

    values: Tensor
    xy: Tensor
    valid: Tensor


def local_peaks(
    heatmaps: Tensor,
    min_distance: int,
    num_peaks: int,
    exclude_border: int = 0,
    fallback_argmax: bool = False,
) -> Peaks:
    """Peaks of every map of ``heatmaps`` (N, J, H, W), highest first (invalid slots: value -inf).

    ``fallback_argmax``: a map with no peak (e.g. its maximum lies in the excluded border) gets its
    global maximum as its one peak, so that no joint is left without a location (docs/anchor.md B11).
    """
    h = heatmaps.float()
    n, j, rows, cols = h.shape
    d = int(min_distance)
    # the (2d+1)^2 window maximum as two 1-D passes (separable; ~2.5x faster on CPU than one)
    pooled = F.max_pool2d(h, (1, 2 * d + 1), stride=1, padding=(0, d))
    pooled = F.max_pool2d(pooled, (2 * d + 1, 1), stride=1, padding=(d, 0))
    mask = (h == pooled) & (h > h.amin(dim=(-2, -1), keepdim=True))
    b = int(exclude_border)
    if b > 0:
        inside = torch.zeros(rows, cols, dtype=torch.bool, device=h.device)
        inside[b : rows - b, b : cols - b] = True
        mask &= inside
    k = min(int(num_peaks), rows * cols)
    values, flat = _spaced_peaks(h.reshape(n, j, rows * cols), mask.reshape(n, j, -1), cols, d, k)
    valid = torch.isfinite(values)
    if fallback_argmax:
        best, where = h.reshape(n, j, -1).max(dim=-1)
        empty = ~valid[..., 0]
        values[..., 0] = torch.where(empty, best, values[..., 0])
        flat[..., 0] = torch.where(empty, where, flat[..., 0])
        valid[..., 0] = True
    xy = torch.stack([flat % cols, flat // cols], dim=-1)
    return Peaks(values, xy, valid)


def _spaced_peaks(
    flat_maps: Tensor, candidate: Tensor, cols: int, d: int, k: int
) -> tuple[Tensor, Tensor]:
    """The first ``k`` candidates that skimage's spacing rule keeps: values (N, J, k) (-inf where
    none is left) and flat positions (N, J, k) of maps (N, J, H*W) with a candidate mask.

    Each round keeps the highest remaining candidate (lowest flat position among equal values, as
    skimage's stable sort of raster-ordered candidates) and drops the candidates closer than d to
    it. That is skimage's greedy pass exactly, since a candidate is only ever dropped by a kept
    one; k rounds, each vectorised over every map.
    """
    pos = torch.arange(flat_maps.shape[-1], device=flat_maps.device)
    x, y = pos % cols, torch.div(pos, cols, rounding_mode="floor")
    scores = flat_maps.masked_fill(~candidate, -math.inf)  # dropped candidates become -inf
    reach = max(d, 1)  # a kept candidate always drops itself
    values, where = [], []
    for _ in range(k):
        top = scores.amax(dim=-1, keepdim=True)
        first = (scores == top).to(torch.uint8).argmax(dim=-1, keepdim=True)  # first of a tie
        found = torch.isfinite(top)
        values.append(top)
        where.append(first)
        near = ((x - x[first]).abs() < reach) & ((y - y[first]).abs() < reach)
        scores.masked_fill_(near & found, -math.inf)
    return torch.cat(values, -1), torch.cat(where, -1)


def peak_probabilities(peaks: Peaks, weights: PeakWeights = "softmax") -> Tensor:
    """(N, J, K) probabilities over each map's valid peaks (0 on invalid slots; rows with none: 0).

    softmax: of the raw peak values (the anchor, docs/anchor.md 6.3); normalise: the values divided by
    their sum (Liu & Ferrari, ICCV 2017), which does not depend on the heatmaps' scale (B10).
    """
    if weights == "softmax":
        logits = peaks.values.masked_fill(~peaks.valid, -math.inf)
        p = torch.softmax(logits, dim=-1)
    elif weights == "normalise":
        v = peaks.values.clamp_min(0).masked_fill(~peaks.valid, 0.0)
        total = v.sum(dim=-1, keepdim=True)
        uniform = peaks.valid.float() / peaks.valid.sum(-1, keepdim=True).clamp_min(1)
        p = torch.where(total > 0, v / total.clamp_min(1e-30), uniform)
    else:
        raise ValueError(f"peak weights must be 'softmax' or 'normalise', got {weights!r}")
    return torch.nan_to_num(p, nan=0.0).masked_fill(~peaks.valid, 0.0)
