"""Two plug-in acquirers for tests that pick the same rows in the same order: one ranks the lowest
mean heatmap peak first, the other the highest negated peak. Neither says which way it ranks."""

import numpy as np


def mean_peak(ctx, indices) -> np.ndarray:
    out = [
        inf.heatmaps.amax(dim=(2, 3)).mean(dim=1).cpu().numpy()
        for inf in ctx.infer_chunks(indices, 256, heatmaps=True)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


class LowestPeakFirst:
    def scores(self, ctx, indices):
        return mean_peak(ctx, indices)

    def select(self, ctx, k: int) -> np.ndarray:
        pool = np.asarray(ctx.unlabelled, np.int64)
        s = self.scores(ctx, pool)
        order = np.argsort(s, kind="stable")[:k]
        self.last_scores = s[order]
        return pool[order]


class HighestNegatedPeakFirst:
    def scores(self, ctx, indices):
        return -mean_peak(ctx, indices)

    def select(self, ctx, k: int) -> np.ndarray:
        pool = np.asarray(ctx.unlabelled, np.int64)
        s = self.scores(ctx, pool)
        order = np.argsort(-s, kind="stable")[:k]
        self.last_scores = s[order]
        return pool[order]
