"""Heatmap peaks on maps with exact ties (bf16-rounded outputs): one pixel per plateau of equal
maxima, as skimage's ``peak_local_max`` keeps, and multi-peak entropy scored on those peaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from active.acquirers.multipeak import multipeak_entropy
from active.acquirers.peaks import local_peaks


def skimage_rule_peaks(hmap: np.ndarray, d: int, k: int, border: int) -> list[tuple[int, int]]:
    """(row, col) peaks of one map by skimage's rule, written out: max filter of (2d+1)^2 (mode
    nearest), above the minimum, outside the border; highest first (stable over raster order);
    a kept peak drops later ones at Chebyshev distance < d (only when d > 1); the first k."""
    cand = (hmap == ndimage.maximum_filter(hmap, size=2 * d + 1, mode="nearest")) & (
        hmap > hmap.min()
    )
    if border:
        cand[:border], cand[-border:], cand[:, :border], cand[:, -border:] = (False,) * 4
    coords = np.transpose(np.nonzero(cand))
    coords = coords[np.argsort(-hmap[cand], kind="stable")]
    kept: list[tuple[int, int]] = []
    dropped: set[int] = set()
    for i, p in enumerate(coords):
        if i in dropped:
            continue
        kept.append((int(p[0]), int(p[1])))
        if len(kept) == k:
            break
        if d > 1:
            far = np.abs(coords - p).max(axis=1)
            dropped.update(int(j) for j in np.flatnonzero(far < d) if j > i)
    return kept


def entropy_of(hmap: np.ndarray, peaks: list[tuple[int, int]], weights: str) -> float:
    v = np.array([hmap[p] for p in peaks], np.float64)
    if len(v) == 0:
        return 0.0
    if weights == "softmax":
        p = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
    else:
        p = v.clip(0) / v.clip(0).sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def bf16_maps(n: int = 12, j: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    """Trained-looking MSE heatmaps (peak ~30, sigma ~1.75 px, a second mode in some), rounded to
    bf16 as CUDA autocast returns them (float32 values again after the rounding)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    maps = np.zeros((n, j, size, size))
    for i in range(n):
        for c in range(j):
            for _ in range(rng.integers(1, 4)):
                cx, cy = rng.uniform(8, size - 8, 2)
                h, s = rng.uniform(10, 30), rng.uniform(1.5, 2.5)
                maps[i, c] += h * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    maps += rng.normal(0, 0.02, maps.shape)
    return torch.from_numpy(maps).float().bfloat16().float().numpy()


def plateau_maps(maps: np.ndarray, d: int) -> int:
    """How many maps have two equal candidate maxima closer than d (where the rule matters)."""
    count = 0
    for hmap in maps.reshape(-1, *maps.shape[-2:]):
        cand = (hmap == ndimage.maximum_filter(hmap, size=2 * d + 1, mode="nearest")) & (
            hmap > hmap.min()
        )
        pts = np.transpose(np.nonzero(cand))
        far = np.abs(pts[:, None] - pts[None]).max(-1)
        count += int(((far < d) & (far > 0)).any())
    return count


@pytest.mark.parametrize(("d", "k", "border"), [(5, 5, 5), (5, 5, 0), (3, 8, 0), (8, 1, 8)])
def test_peaks_on_bf16_maps_are_skimages(d, k, border):
    maps = bf16_maps()
    assert plateau_maps(maps, d) >= 5  # the rounding made ties that the rule has to thin
    peaks = local_peaks(torch.from_numpy(maps), d, k, border)
    for i, img in enumerate(maps):
        for c, hmap in enumerate(img):
            want = skimage_rule_peaks(hmap, d, k, border)
            got = peaks.xy[i, c][peaks.valid[i, c]].tolist()
            assert [(y, x) for x, y in got] == want, (i, c)


@pytest.mark.parametrize("weights", ["softmax", "normalise"])
def test_multipeak_entropy_on_bf16_maps_breaks_ties_as_skimage(weights):
    maps = bf16_maps(seed=1)
    d, k, border = 5, 5, 5
    ours = multipeak_entropy(torch.from_numpy(maps), d, k, border, weights).numpy()
    ref = [
        sum(entropy_of(m, skimage_rule_peaks(m, d, k, border), weights) for m in img)
        for img in maps
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_a_plateau_gives_one_peak_per_min_distance():
    hmap = np.zeros((1, 1, 20, 20), np.float32)
    hmap[0, 0, 10, 4:9] = 7.0  # a flat ridge 5 px long: d = 2 keeps columns 4, 6, 8
    peaks = local_peaks(torch.from_numpy(hmap), 2, 10)
    got = peaks.xy[0, 0][peaks.valid[0, 0]].tolist()
    assert got == [[4, 10], [6, 10], [8, 10]]
    assert multipeak_entropy(torch.from_numpy(hmap), 5, 5, 0).item() == 0.0  # one peak: H = 0


def test_the_written_out_rule_is_skimages():
    feature = pytest.importorskip("skimage.feature")
    maps = bf16_maps(n=6, seed=2)
    for hmap in maps.reshape(-1, *maps.shape[-2:]):
        for d, k, border in ((5, 5, 5), (3, 8, 0)):
            sk = feature.peak_local_max(hmap, min_distance=d, num_peaks=k, exclude_border=border)
            assert [tuple(map(int, p)) for p in sk] == skimage_rule_peaks(hmap, d, k, border)
