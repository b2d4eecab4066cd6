"""Heatmap and auxiliary-head acquirers on hand-made values: multi-peak entropy, Learning Loss and
LearningLoss++ (losses and gradients), aleatoric NLL, VL4Pose likelihood, the heads' sizes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from active.acquirers.aleatoric import aleatoric_nll
from active.acquirers.base import AcquisitionContext, Inference, keeps_anchor_bugs, top_k
from active.acquirers.heads import build_head
from active.acquirers.learning_loss import margin_ranking_loss, normalised_loss, pair_kl_loss
from active.acquirers.multipeak import multipeak_entropy
from active.acquirers.peaks import local_peaks
from active.acquirers.vl4pose import (
    VL4PoseAcquirer,
    link_nll,
    skeleton_links,
    tree_log_likelihood,
)
from hourglass.model import StackedHourglass

LN2 = math.log(2.0)


def blob(size: int, centres: list[tuple[int, int]], heights: list[float], sigma=1.0) -> np.ndarray:
    """A map of Gaussian bumps at integer (x, y) centres."""
    y, x = np.mgrid[:size, :size]
    out = np.zeros((size, size))
    for (cx, cy), h in zip(centres, heights, strict=True):
        out += h * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return out


# -- multi-peak entropy ------------------------------------------------------------------------
@pytest.mark.parametrize("weights", ["softmax", "normalise"])
def test_one_peak_scores_zero_and_two_equal_peaks_ln2(weights):
    maps = np.stack([blob(32, [(16, 16)], [30.0]), blob(32, [(9, 10), (22, 20)], [30.0, 30.0])])
    h = torch.from_numpy(maps).float()[None]  # (1, 2, 32, 32)
    assert multipeak_entropy(h[:, :1], weights=weights).item() == pytest.approx(0.0, abs=1e-6)
    assert multipeak_entropy(h[:, 1:], weights=weights).item() == pytest.approx(LN2, abs=1e-6)
    assert multipeak_entropy(h, weights=weights).item() == pytest.approx(LN2, abs=1e-6)


def test_border_peaks_are_ignored_only_when_keeping_the_anchor_bug():
    h = torch.from_numpy(blob(32, [(2, 16), (20, 16)], [30.0, 30.0])).float()[None, None]
    assert multipeak_entropy(h, exclude_border=5).item() == pytest.approx(0.0, abs=1e-6)
    assert multipeak_entropy(h, exclude_border=0).item() == pytest.approx(LN2, abs=1e-6)


def reference_entropy(hmap: np.ndarray, d: int, k: int, border: int, weights: str) -> float:
    """One map, directly: skimage-style peak_local_max (max filter, > min, border, spacing)."""
    is_max = (hmap == ndimage.maximum_filter(hmap, size=2 * d + 1, mode="nearest")) & (
        hmap > hmap.min()
    )
    if border:
        is_max[:border], is_max[-border:], is_max[:, :border], is_max[:, -border:] = (False,) * 4
    cands = sorted(zip(*np.nonzero(is_max), strict=True), key=lambda p: -hmap[p])
    kept: list[tuple[int, int]] = []
    for p in cands:
        if all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= d for q in kept):
            kept.append(p)
    v = np.array([hmap[p] for p in kept[:k]], dtype=np.float64)
    if len(v) == 0:
        return 0.0
    if weights == "softmax":
        p = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
    else:
        p = np.clip(v, 0, None) / np.clip(v, 0, None).sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize(
    ("d", "k", "border", "weights"),
    [(5, 5, 5, "softmax"), (5, 5, 0, "normalise"), (2, 3, 0, "softmax"), (3, 8, 3, "normalise")],
)
def test_batched_entropy_matches_a_direct_per_image_computation(d, k, border, weights):
    rng = np.random.default_rng(d * 10 + k)
    maps = ndimage.gaussian_filter(rng.random((6, 4, 40, 40)), sigma=(0, 0, 1.5, 1.5)) * 30
    ours = multipeak_entropy(torch.from_numpy(maps), d, k, border, weights).numpy()
    ref = [sum(reference_entropy(m, d, k, border, weights) for m in img) for img in maps]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert (ours > 0).sum() >= 4  # smoothed noise: several peaks in most maps


def test_peaks_fall_back_to_the_argmax_when_none_is_found():
    h = torch.from_numpy(blob(16, [(1, 8)], [5.0])).float()[None, None]
    none = local_peaks(h, 8, 1, exclude_border=8)
    assert not none.valid.any()
    fb = local_peaks(h, 8, 1, exclude_border=8, fallback_argmax=True)
    assert fb.valid.all() and fb.xy[0, 0, 0].tolist() == [1, 8]


# -- Learning Loss and LearningLoss++ -------------------------------------------------------------
def test_margin_ranking_loss_equals_a_hand_computation():
    pred = torch.tensor([0.5, 2.0, 1.0, -1.0, 7.0])  # pairs (0,2), (1,3); the odd last row unused
    true = torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0])
    # pair (0,2): sign(+) -> max(0, 1 - (0.5 - 1.0)) = 1.5; pair (1,3): tie -> max(0, 1 - 0) = 1
    assert margin_ranking_loss(pred, true, 1.0).item() == pytest.approx((1.5 + 1.0) / 2)
    pred2 = torch.tensor([3.0, 0.0, 1.0, 0.0])
    true2 = torch.tensor([2.0, 0.0, 1.0, 1.0])  # (0,2): 1 - 2 < 0 -> 0; (1,3): 1 - (-1)(0) = 1
    assert margin_ranking_loss(pred2, true2, 1.0).item() == pytest.approx(0.5)


def test_pair_kl_loss_equals_a_hand_computation():
    pred = torch.tensor([0.0, 1.0, math.log(3.0), 1.0])
    true = torch.tensor([1.0, 2.0, 3.0, 2.0])
    # pair 0: p = (1/4, 3/4), q = (1/4, 3/4) -> 0; pair 1: p = (1/2, 1/2), q = (1/2, 1/2) -> 0
    assert pair_kl_loss(pred, true).item() == pytest.approx(0.0, abs=1e-7)
    pred = torch.tensor([0.0, 0.0])
    true = torch.tensor([1.0, 3.0])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert pair_kl_loss(pred, true).item() == pytest.approx(expected, rel=1e-6)


def test_learning_loss_pp_gradient_is_q_minus_p_and_learning_loss_is_piecewise_constant():
    rng = np.random.default_rng(3)
    theta = torch.from_numpy(rng.normal(size=(8, 5)))
    w = torch.from_numpy(rng.normal(size=5)).requires_grad_(True)
    true = torch.from_numpy(rng.gamma(2.0, 0.1, size=8))
    pred = theta @ w
    pred.retain_grad()
    pair_kl_loss(pred, true).backward()
    ti, tj, pi, pj = true[:4], true[4:], pred[:4].detach(), pred[4:].detach()
    p_i = ti / (ti + tj)
    q_i = torch.sigmoid(pi - pj)  # softmax(a, b)_0
    n = 4
    torch.testing.assert_close(pred.grad[:4], (q_i - p_i) / n)
    torch.testing.assert_close(pred.grad[4:], -(q_i - p_i) / n)
    # the poster's closed form for a linear head lhat = w . theta
    closed_w = ((q_i - p_i)[:, None] * (theta[:4] - theta[4:])).sum(0) / n
    torch.testing.assert_close(w.grad, closed_w)
    # Learning Loss: each active pair contributes -sign(l_i - l_j)(theta_i - theta_j) / n
    w2 = w.detach().clone().requires_grad_(True)
    pred2 = theta @ w2
    margin_ranking_loss(pred2, true, 1.0).backward()
    sign = torch.sign(ti - tj)
    active = (1.0 - sign * (pi - pj)) > 0
    closed_ll = ((-sign * active)[:, None] * (theta[:4] - theta[4:])).sum(0) / n
    torch.testing.assert_close(w2.grad, closed_ll)


def test_normalised_loss_divides_by_joints_plus_a_tenth():
    loss = torch.tensor([1.0, 2.0])
    has = torch.tensor([[True] * 16, [True] * 4 + [False] * 12])
    torch.testing.assert_close(normalised_loss(loss, has), torch.tensor([1 / 16.1, 2 / 4.1]))


# -- aleatoric ------------------------------------------------------------------------------------
def test_aleatoric_nll_on_hand_made_values():
    pred = torch.zeros(1, 2, 8, 8)
    gt = torch.zeros(1, 2, 8, 8)
    pred[0, 0, 3, 2] = 1.0  # (x=2, y=3)
    gt[0, 0, 7, 5] = 1.0  # (x=5, y=7): r = 9 + 16 = 25
    pred[0, 1, 0, 0] = gt[0, 1, 4, 4] = 1.0  # absent joint: masked out
    log_var = torch.tensor([[math.log(25.0), 3.0]])
    has = torch.tensor([[True, False]])
    expected = (0.5 * 1.0 + 0.5 * math.log(25.0)) / 2  # mean over batch x joints
    assert aleatoric_nll(log_var, pred, gt, has).item() == pytest.approx(expected, rel=1e-6)


# -- VL4Pose --------------------------------------------------------------------------------------
def gauss_logpdf(x, mu, log_var):
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mu) ** 2 * math.exp(-log_var))


def test_tree_likelihood_on_hand_made_values():
    links = ((0, 1), (0, 2), (2, 3))  # root 0; 2 has a child
    xy = torch.tensor([[[[0.0, 0.0]], [[3.0, 4.0]], [[0.0, 2.0]], [[0.0, 5.0]]]])  # (1, 4, 1, 2)
    log_p = torch.zeros(1, 4, 1)
    valid = torch.ones(1, 4, 1, dtype=torch.bool)
    mu = torch.tensor([[5.0, 1.0, 2.0]])
    s = torch.tensor([[0.0, math.log(4.0), -1.0]])
    expected = gauss_logpdf(5, 5, 0) + gauss_logpdf(2, 1, math.log(4)) + gauss_logpdf(3, 2, -1)
    for combine in ("max", "sum"):
        got = tree_log_likelihood(xy, log_p, valid, mu, s, links, combine).item()
        assert got == pytest.approx(expected, rel=1e-6)
    # two candidates for joint 1 (distances 5 and 1, log-probs a, b): max vs the anchor's sum
    xy2 = torch.zeros(1, 2, 2, 2)
    xy2[0, 1, 0] = torch.tensor([3.0, 4.0])
    xy2[0, 1, 1] = torch.tensor([1.0, 0.0])
    lp = torch.log(torch.tensor([[[1.0, 1e-30], [0.7, 0.3]]]))
    valid2 = torch.tensor([[[True, False], [True, True]]])
    a = gauss_logpdf(5, 5, 0) + math.log(0.7)
    b = gauss_logpdf(1, 5, 0) + math.log(0.3)
    args = (xy2, lp, valid2, mu[:, :1], s[:, :1], ((0, 1),))
    assert tree_log_likelihood(*args, "max").item() == pytest.approx(max(a, b), rel=1e-6)
    assert tree_log_likelihood(*args, "sum").item() == pytest.approx(a + b, rel=1e-6)


def test_link_nll_on_hand_made_values():
    links = ((0, 1), (1, 2))
    gt = torch.zeros(1, 3, 8, 8)
    gt[0, 0, 0, 0] = gt[0, 1, 4, 3] = gt[0, 2, 7, 7] = 1.0  # (0,0) -> (3,4): length 5
    has = torch.tensor([[True, True, False]])  # link (1, 2) masked
    mu, s = torch.tensor([[4.0, 9.0]]), torch.tensor([[0.0, 2.0]])
    expected = (0.5 * 1.0 + 0.0) / 2
    assert link_nll(mu, s, gt, has, links).item() == pytest.approx(expected)


class _FixedContext(AcquisitionContext):
    """A context whose inference returns given heatmaps and head outputs."""

    def __init__(self, heatmaps, aux, protocol):
        super().__init__(
            model=torch.nn.Identity(),
            data=SimpleNamespace(num_joints=heatmaps.shape[1]),
            labelled=np.zeros(0, np.int64),
            unlabelled=np.arange(len(heatmaps)),
            rng=np.random.default_rng(0),
            protocol=protocol,
        )
        self._h, self._aux = heatmaps, aux

    def infer_chunks(self, indices, chunk, **what):
        yield Inference(np.asarray(indices), heatmaps=self._h[indices], aux=self._aux[indices])


@pytest.mark.parametrize("protocol", ["paper", "standard"])
def test_vl4pose_scores_a_joint_without_peaks_and_ranks_the_implausible_skeleton_first(protocol):
    links = skeleton_links(16)
    rng = np.random.default_rng(0)
    centres = rng.integers(10, 54, size=(16, 2))
    good = np.stack([blob(64, [tuple(c)], [30.0]) for c in centres])
    bad = good.copy()
    bad[0] = blob(64, [(1, 62)], [30.0])  # r_ankle's maximum in the border: no peak (B11)
    h = torch.from_numpy(np.stack([good, bad])).float()
    lengths = torch.tensor([float(np.linalg.norm(centres[p] - centres[c])) for p, c in links])
    aux = torch.cat([lengths, torch.zeros(len(links))])[None].repeat(2, 1)
    ctx = _FixedContext(h, aux, protocol)
    acq = VL4PoseAcquirer()
    scores = acq.scores(ctx, np.arange(2))
    assert np.isfinite(scores).all()
    expected_good = len(links) * gauss_logpdf(0.0, 0.0, 0.0)  # every link at its predicted mean
    assert scores[0] == pytest.approx(expected_good, rel=1e-4)
    assert scores[1] < scores[0]
    assert acq.select(ctx, 1).tolist() == [1]


# -- heads and helpers ----------------------------------------------------------------------------
def test_conv_head_at_the_paper_size_has_the_anchors_parameter_count():
    model = StackedHourglass(2, 256, 4, 16)
    head = build_head("conv", model, SimpleNamespace(image_size=256), 1)
    assert sum(p.numel() for p in head.parameters()) == 2_142_209  # anchor.md 3.2: ~2.142M


@pytest.mark.parametrize(
    ("kind", "out"), [("conv", 1), ("conv", 30), ("pooled", 1), ("pooled", 16)]
)
def test_heads_map_pose_outputs_to_the_asked_shape(kind, out):
    torch.manual_seed(0)
    model = StackedHourglass(1, 16, 2, 16).eval()
    head = build_head(kind, model, SimpleNamespace(image_size=64), out)
    with torch.no_grad():
        y = head(model(torch.rand(3, 3, 64, 64)))
    assert y.shape == ((3,) if out == 1 else (3, out))


def test_top_k_and_anchor_bug_switch():
    assert top_k(np.array([1.0, 3.0, 3.0, 0.0]), 3).tolist() == [1, 2, 0]
    assert top_k(np.array([1.0, 3.0, 3.0, 0.0]), 2, highest=False).tolist() == [3, 0]
    assert keeps_anchor_bugs("auto", "paper") and not keeps_anchor_bugs("auto", "standard")
    assert keeps_anchor_bugs("keep", "standard") and not keeps_anchor_bugs("fix", "paper")
    with pytest.raises(ValueError):
        keeps_anchor_bugs("maybe", "paper")
