"""Gaussian heatmap targets and heatmap decoding.

Coordinates: image pixels are 0-based with pixel centres on integers; heatmaps use the
align-corners mapping of the anchor, heatmap = image * (hm - 1) / (in - 1), i.e. 63/255 at
256 -> 64 (docs/anchor.md 2.5). Shapes: joints (B, J, 2) as (x, y); heatmaps (B, J, H, W).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

DecodeMethod = Literal["parabola", "paper", "quarter"]


def image_to_heatmap(xy: Tensor, input_size: int, heatmap_size: int) -> Tensor:
    """Map image-pixel coordinates to heatmap-pixel coordinates (align corners)."""
    return xy * ((heatmap_size - 1) / (input_size - 1))


def heatmap_to_image(xy: Tensor, input_size: int, heatmap_size: int) -> Tensor:
    """Inverse of :func:`image_to_heatmap`."""
    return xy * ((input_size - 1) / (heatmap_size - 1))


def gaussian_targets(
    joints: Tensor, present: Tensor, size: int, sigma: float = 1.75, peak: float = 30.0
) -> tuple[Tensor, Tensor]:
    """Unnormalised Gaussians at sub-pixel joint positions, truncated to a window.

    joints: (B, J, 2) in heatmap pixels; present: (B, J) bool (joints that get a target).
    The window is ceil(6 sigma) pixels, made odd, centred on round(mu) (11x11 at sigma 1.75) and cut
    at the border; a joint whose window misses the map gets a zero map (docs/anchor.md 2.5; paper peak 30).
    Returns (targets (B, J, size, size), has_target (B, J) bool).
    """
    radius = (math.ceil(6 * sigma) | 1) // 2
    grid = torch.arange(size, dtype=joints.dtype, device=joints.device)
    mu = joints.unsqueeze(-1)  # (B, J, 2, 1)
    centre = torch.round(mu)
    inside = (grid - centre).abs() <= radius  # (B, J, 2, size)
    profile = torch.exp(-((grid - mu) ** 2) / (2 * sigma**2)) * inside
    has_target = present & inside.any(-1).all(-1)
    gx, gy = profile[:, :, 0], profile[:, :, 1]
    targets = peak * gy.unsqueeze(-1) * gx.unsqueeze(-2)
    return targets * has_target[..., None, None], has_target


def _argmax(heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Integer argmax per map: (x, y) long tensors (B, J) and the maximum values."""
    b, j, h, w = heatmaps.shape
    values, flat = heatmaps.reshape(b, j, h * w).max(dim=-1)
    return flat % w, flat // w, values


def _neighbours(heatmaps: Tensor, x: Tensor, y: Tensor, dx: int, dy: int) -> Tensor:
    """Values at (x+dx, y+dy), clamped to the map (B, J)."""
    h, w = heatmaps.shape[-2:]
    xi = (x + dx).clamp(0, w - 1)
    yi = (y + dy).clamp(0, h - 1)
    flat = heatmaps.flatten(-2)
    return flat.gather(-1, (yi * w + xi).unsqueeze(-1)).squeeze(-1)


def _decode_parabola(heatmaps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Sub-pixel peak of a parabola fitted to the log-heatmap around the argmax.

    Exact for an untruncated Gaussian (Zhang et al., DARK, CVPR 2020 use the same Taylor step).
    """
    logh = torch.log(
        heatmaps.clamp_min(1e-10) / heatmaps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-10)
    )
    logh = logh.clamp_min(math.log(1e-10))
    c = _neighbours(logh, x, y, 0, 0)
    offsets = []
    for dx, dy in ((1, 0), (0, 1)):
        lo = _neighbours(logh, x, y, -dx, -dy)
        hi = _neighbours(logh, x, y, dx, dy)
        curvature = lo - 2 * c + hi
        step = torch.where(curvature < -1e-6, 0.5 * (lo - hi) / curvature, torch.zeros_like(c))
        offsets.append(step.clamp(-0.5, 0.5))
    return torch.stack([x + offsets[0], y + offsets[1]], dim=-1)


def _decode_paper(heatmaps: Tensor, x: Tensor, y: Tensor, radius: int = 2) -> Tensor:
    """Weighted mean of the non-negative heatmap over [argmax +- 2] (docs/anchor.md 5; ceil(1.75) = 2)."""
    h, w = heatmaps.shape[-2:]
    offs = torch.arange(-radius, radius + 1, device=heatmaps.device)
    xs = (x.unsqueeze(-1) + offs).unsqueeze(-2)  # (B, J, 1, K)
    ys = (y.unsqueeze(-1) + offs).unsqueeze(-1)  # (B, J, K, 1)
    valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    idx = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).flatten(-2)
    vals = heatmaps.flatten(-2).gather(-1, idx).clamp_min(0) * valid.flatten(-2)
    total = vals.sum(-1).clamp_min(1e-12)
    mean_x = (vals * xs.expand_as(valid).flatten(-2)).sum(-1) / total
    mean_y = (vals * ys.expand_as(valid).flatten(-2)).sum(-1) / total
    flat_peak = vals.sum(-1) > 0
    return torch.stack(
        [torch.where(flat_peak, mean_x, x.to(vals)), torch.where(flat_peak, mean_y, y.to(vals))], -1
    )


def _decode_quarter(heatmaps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Argmax plus a quarter-pixel step toward the higher neighbour (Newell / HRNet standard)."""
    steps = []
    for dx, dy in ((1, 0), (0, 1)):
        diff = _neighbours(heatmaps, x, y, dx, dy) - _neighbours(heatmaps, x, y, -dx, -dy)
        steps.append(0.25 * torch.sign(diff))
    return torch.stack([x + steps[0], y + steps[1]], dim=-1)


def decode(heatmaps: Tensor, method: DecodeMethod = "parabola") -> tuple[Tensor, Tensor]:
    """Heatmaps (B, J, H, W) -> (coordinates (B, J, 2) in heatmap pixels, peak values (B, J)).

    parabola: log-space quadratic refinement (default; exact for Gaussian peaks);
    paper: the anchor's local weighted mean; quarter: the standard quarter offset.
    """
    heatmaps = heatmaps.float()
    x, y, values = _argmax(heatmaps)
    if method == "parabola":
        xy = _decode_parabola(heatmaps, x, y)
    elif method == "paper":
        xy = _decode_paper(heatmaps, x, y)
    elif method == "quarter":
        xy = _decode_quarter(heatmaps, x, y)
    else:
        raise ValueError(f"unknown decode method {method!r}; use parabola, paper or quarter")
    return xy, values


def flip_heatmaps(heatmaps: Tensor, permutation: list[int]) -> Tensor:
    """Heatmaps of a horizontally flipped image mapped back: mirror x and swap left/right joints."""
    return heatmaps.flip(-1)[:, permutation]
