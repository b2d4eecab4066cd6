"""Pose losses on stacked heatmaps, per sample (Learning Loss needs the per-sample value).

``mse``: the anchor's unmasked mean squared error over stacks, joints and pixels (docs/anchor.md 3.1).
``ce``: spatial-softmax cross-entropy against the normalised Gaussian target, averaged over the
joints that have a target; it learns ~2x faster at small budgets (measured on a prototype of the CPU quickstart) and is the
small CPU configuration's choice. Its heatmaps are logits; :func:`to_heatmaps` turns them into maps.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LossKind = Literal["mse", "ce"]


def per_sample_loss(raw: Tensor, targets: Tensor, has_target: Tensor, kind: LossKind) -> Tensor:
    """raw (B, S, J, H, W), targets (B, J, H, W), has_target (B, J) -> loss per sample (B,)."""
    raw = raw.float()
    if kind == "mse":
        return ((raw - targets.unsqueeze(1)) ** 2).mean(dim=(1, 2, 3, 4))
    if kind == "ce":
        b, s, j = raw.shape[:3]
        logp = torch.log_softmax(raw.reshape(b, s, j, -1), dim=-1)
        q = targets.reshape(b, 1, j, -1)
        q = q / q.sum(-1, keepdim=True).clamp_min(1e-12)
        per_joint = -(q * logp).sum(-1).mean(1)  # (B, J), mean over stacks
        mask = has_target.float()
        return (per_joint * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    raise ValueError(f"unknown loss {kind!r}; use mse or ce")


def to_heatmaps(raw_last: Tensor, kind: LossKind) -> Tensor:
    """The last stack's raw output (B, J, H, W) as non-negative heatmaps for decoding and acquirers."""
    if kind == "ce":
        b, j, h, w = raw_last.shape
        return torch.softmax(raw_last.float().reshape(b, j, -1), dim=-1).reshape(b, j, h, w)
    return raw_last.float()
