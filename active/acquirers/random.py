"""Random acquisition (docs/anchor.md 6.1): uniform without replacement from the unlabelled pool.

Unlike the anchor (unseeded), the draw uses only ``ctx.rng``, so a seed fixes the picks.
"""

from __future__ import annotations

import numpy as np

from active.acquirers.base import AcquisitionContext


class RandomAcquirer:
    """Picks ``k`` unlabelled rows uniformly at random; ``last_scores`` are zeros (no ranking)."""

    def __init__(self) -> None:
        self.last_scores: np.ndarray = np.zeros(0)

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """Draw ``min(k, len(ctx.unlabelled))`` distinct rows of ``ctx.unlabelled`` with ``ctx.rng``."""
        pool = np.asarray(ctx.unlabelled, dtype=np.int64)
        k = min(int(k), len(pool))
        picked = ctx.rng.choice(pool, size=k, replace=False) if k > 0 else pool[:0]
        self.last_scores = np.zeros(k, dtype=np.float32)
        return picked.astype(np.int64)
