"""Multi-peak entropy (docs/anchor.md 6.3; after Liu & Ferrari, ICCV 2017) on the last stack's heatmaps.

Per joint map: up to ``num_peaks`` local maxima at least ``min_distance`` apart, turned into
probabilities, and their entropy (nats); an image scores the sum over joints (a joint with one peak
or none adds 0). The highest scores are labelled next. Vectorised over images and joints on the
device (max-pooling, :mod:`active.acquirers.peaks`), ``chunk`` images at a time.

anchor_bugs (B10): keep = peaks within ``min_distance`` of the border are ignored (skimage's
default) and the probabilities are the softmax of the raw peak values; fix = border peaks count and
the probabilities are the peak values normalised to sum 1 (scale-free: the softmax of 0-1
spatial-softmax maps is near uniform, that of 0-30 MSE maps near one-hot).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from active.acquirers.base import AcquisitionContext, RankingAcquirer, keeps_anchor_bugs
from active.acquirers.peaks import PeakWeights, local_peaks, peak_probabilities


def multipeak_entropy(
    heatmaps: Tensor,
    min_distance: int = 5,
    num_peaks: int = 5,
    exclude_border: int = 5,
    weights: PeakWeights = "softmax",
) -> Tensor:
    """(N,) sum over joints of the entropy of each map's peak probabilities; heatmaps (N, J, H, W)."""
    peaks = local_peaks(heatmaps, min_distance, num_peaks, exclude_border)
    p = peak_probabilities(peaks, weights)
    return -torch.xlogy(p, p).sum(dim=(1, 2))


class MultiPeakAcquirer(RankingAcquirer):
    """Highest multi-peak entropy first; ``last_scores`` are the picks' entropies (nats)."""

    def __init__(
        self,
        min_distance: int = 5,
        num_peaks: int = 5,
        anchor_bugs: str = "auto",
        chunk: int = 2048,
    ) -> None:
        keeps_anchor_bugs(anchor_bugs, "paper")  # validates the value
        self.min_distance, self.num_peaks = int(min_distance), int(num_peaks)
        self.anchor_bugs, self.chunk = anchor_bugs, int(chunk)

    def scores(self, ctx: AcquisitionContext, indices: np.ndarray) -> np.ndarray:
        """Multi-peak entropy of each row of ``indices``."""
        keep = keeps_anchor_bugs(self.anchor_bugs, ctx.protocol)
        border = self.min_distance if keep else 0
        weights: PeakWeights = "softmax" if keep else "normalise"
        parts = [
            multipeak_entropy(out.heatmaps, self.min_distance, self.num_peaks, border, weights)
            for out in ctx.infer_chunks(indices, self.chunk, heatmaps=True)
        ]
        return torch.cat(parts).cpu().numpy() if parts else np.zeros(0, np.float32)
