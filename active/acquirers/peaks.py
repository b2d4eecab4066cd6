"""Local maxima of heatmaps, batched on the device (what skimage ``peak_local_max`` finds per map).

A pixel is a peak when it equals the maximum of its (2d+1)^2 window (max-pooling, d = min_distance),
exceeds the map's minimum (skimage's default ``threshold_abs``) and lies at least ``exclude_border``
pixels from the edge. The ``num_peaks`` highest are kept, highest first. Two distinct-valued peaks
are always more than d apart (Chebyshev), so skimage's spacing pass only matters for exact ties on a
plateau: those are all kept here (measure zero on real network outputs).
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
    global maximum as its one peak, so that no joint is left without a location (anchor.md B11).
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
    scores = torch.where(mask, h, torch.full_like(h, -math.inf)).reshape(n, j, rows * cols)
    values, flat = scores.topk(k, dim=-1)
    valid = torch.isfinite(values)
    if fallback_argmax:
        best, where = h.reshape(n, j, -1).max(dim=-1)
        empty = ~valid[..., 0]
        values[..., 0] = torch.where(empty, best, values[..., 0])
        flat[..., 0] = torch.where(empty, where, flat[..., 0])
        valid[..., 0] = True
    xy = torch.stack([flat % cols, flat // cols], dim=-1)
    return Peaks(values, xy, valid)


def peak_probabilities(peaks: Peaks, weights: PeakWeights = "softmax") -> Tensor:
    """(N, J, K) probabilities over each map's valid peaks (0 on invalid slots; rows with none: 0).

    softmax: of the raw peak values (the anchor, anchor.md 6.3); normalise: the values divided by
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
