"""PCKh / PCK conventions: hand-made cases, and the metrics.md s.2.3 / s.3.3 sensitivity checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hourglass.metrics import (
    PAPER_MPII_THRESHOLD,
    format_table,
    lsp_pck,
    mpii_pckh,
    normalised_distances,
)
from hourglass.prediction_files import read_lsp_gt, read_mpii_gt, read_predictions, read_variables

MPII_GT = "bearpaw-pytorch-pose/detections_our_format.mat"
LSP_DIR = "farrajota-human-pose-benchmark"


# ---------------------------------------------------------------------------------------------
# Hand-made cases (no external data)
# ---------------------------------------------------------------------------------------------


def _mpii_layout(n: int) -> np.ndarray:
    """(n,16,2) GT with joint j at (100 + 10 j, 200); neck (8) at (10, 50), head_top (9) at (10, 0)."""
    gt = np.zeros((n, 16, 2))
    gt[:, :, 0] = 100 + 10 * np.arange(16)
    gt[:, :, 1] = 200
    gt[:, 8] = (10, 50)
    gt[:, 9] = (10, 0)
    return gt


def test_normalised_distances_is_euclidean_over_per_sample_length():
    gt = np.zeros((2, 3, 2))
    pred = gt.copy()
    pred[0, 1] = (3, 4)  # distance 5
    pred[1, 2] = (6, 8)  # distance 10
    d = normalised_distances(pred, gt, np.array([10.0, 4.0]))
    assert d.shape == (2, 3)
    np.testing.assert_allclose(d, [[0, 0.5, 0], [0, 0, 2.5]])


def test_normalised_distances_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 2\).*\(2, 4, 2\)"):
        normalised_distances(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)), np.ones(2))


def test_mpii_standard_uses_06_diagonal_strict_threshold_and_14_joint_mean():
    """Head box 30x40 (diag 50) -> head size 30; 14.9 px hits, 15.1 px misses at 0.5."""
    gt = _mpii_layout(1)
    pred = gt.copy()
    pred[0, 0, 0] += 14.9  # 14.9/30 < 0.5: hit
    pred[0, 1, 0] += 15.1  # miss
    pred[0, 6, 0] += 99  # pelvis and thorax miss, but are not in the standard Mean
    pred[0, 7, 0] += 99
    scored = np.ones((1, 16), bool)
    r = mpii_pckh(pred, gt, scored, head_boxes=np.array([[0, 0, 30, 40]]))
    assert r.correct.tolist() == [1, 0, 1, 1, 1, 1, 0, 0] + [1] * 8
    assert r.summary["Mean"] == pytest.approx(100 * 13 / 14)
    assert r.summary["Mean_weighted"] == pytest.approx(100 * 13 / 14)
    assert r.parts["Knee"] == pytest.approx(50.0)  # (r_knee 0 + l_knee 100) / 2
    assert r.parts["Head"] == 100.0
    same = mpii_pckh(pred, gt, scored, head_diag=np.array([50.0]))
    np.testing.assert_array_equal(same.correct, r.correct)


def test_mpii_unscored_joints_are_excluded_and_nan_when_empty():
    gt = _mpii_layout(2)
    pred = gt + 1000.0  # everything wrong ...
    pred[:, 3] = gt[:, 3]  # ... except l_hip
    scored = np.ones((2, 16), bool)
    scored[:, 0] = False  # r_ankle never annotated
    scored[1, 4] = False  # l_knee annotated once
    r = mpii_pckh(pred, gt, scored, head_diag=np.full(2, 50.0))
    assert r.scored[0] == 0 and math.isnan(r.per_joint[0])
    assert r.scored[4] == 1
    assert r.parts["Ankle"] == 0.0  # nan r_ankle skipped, l_ankle 0
    assert r.summary["Mean"] == pytest.approx(100 / 13)  # 13 finite joints, one at 100
    payload = r.to_json()
    assert payload["per_joint"]["r_ankle"] is None
    json.dumps(payload, allow_nan=False)


def test_mpii_needs_exactly_one_head_size():
    gt = _mpii_layout(1)
    scored = np.ones((1, 16), bool)
    with pytest.raises(ValueError, match="exactly one"):
        mpii_pckh(gt, gt, scored)
    with pytest.raises(ValueError, match="exactly one"):
        mpii_pckh(gt, gt, scored, head_boxes=np.zeros((1, 4)), head_diag=np.ones(1))


def test_paper_convention_hand_computed():
    """Diagonal normaliser, head pull only when the neck is scored, t = 10/19, 16-joint mean.

    A: diag 50 (radius 26.3 px). r_ankle +26 hits, r_knee +27 misses, r_hip unscored (+1000).
       Head pred 36 px below the raw head_top but 26 px from the pulled one (0.8 head + 0.2 neck).
    B: diag 100 (radius 52.6 px). r_ankle +53 misses. Neck unscored with a far-off coordinate,
       so no pull: head pred 36 px from the raw head_top hits (a wrong pull would move it 64 px).
    Per joint: r_ankle 50, r_knee 50, the other 14 joints 100 -> Mean = 1500/16 = 93.75.
    """
    gt = _mpii_layout(2)
    gt[1, 8] = (10, 500)
    pred = gt.copy()
    pred[0, 0, 0] += 26
    pred[0, 1, 0] += 27
    pred[0, 2, 0] += 1000
    pred[1, 0, 0] += 53
    pred[:, 9] = (10, 36)
    scored = np.ones((2, 16), bool)
    scored[0, 2] = False
    scored[1, 8] = False
    boxes = np.array([[0, 0, 30, 40], [0, 0, 60, 80]], float)
    r = mpii_pckh(pred, gt, scored, head_boxes=boxes, convention="paper")
    assert r.threshold == PAPER_MPII_THRESHOLD == 10 / 19
    assert r.correct.tolist() == [1, 1, 1] + [2] * 5 + [1, 2] + [2] * 6
    assert r.scored.tolist() == [2, 2, 1] + [2] * 5 + [1, 2] + [2] * 6
    assert r.summary == {"Mean": pytest.approx(93.75)}
    assert r.parts["Ankle"] == pytest.approx(75.0)
    assert r.parts["Knee"] == pytest.approx(75.0)
    assert r.parts["Head"] == 100.0
    # Without the pull, A's head (36/50 = 0.72) misses: the pull is what makes it a hit.
    no_pull = normalised_distances(pred, gt, np.hypot(boxes[:, 2], boxes[:, 3]))[:, 9]
    assert no_pull[0] > 10 / 19 > no_pull[1]
    # The standard convention on the same case: head size 30 / 60, threshold 0.5 (15 / 30 px).
    std = mpii_pckh(pred, gt, scored, head_boxes=boxes)
    assert std.correct[:2].tolist() == [0, 1]


def test_paper_threshold_override_and_unknown_convention():
    gt = _mpii_layout(1)
    scored = np.ones((1, 16), bool)
    pred = gt.copy()
    pred[0, 0, 0] += 26  # 0.52: hit at 10/19, miss at 0.5
    diag = np.array([50.0])
    assert mpii_pckh(pred, gt, scored, head_diag=diag, convention="paper").correct[0] == 1
    r = mpii_pckh(pred, gt, scored, head_diag=diag, convention="paper", threshold=0.5)
    assert r.correct[0] == 0 and r.threshold == 0.5
    with pytest.raises(ValueError, match="convention"):
        mpii_pckh(pred, gt, scored, head_diag=diag, convention="anchor")


def _lsp_layout(n: int) -> np.ndarray:
    """(n,14,2) LSP GT whose torso ||l_sho(9) - r_hip(2)|| is 50 px; r_sho/l_hip diagonal 80 px."""
    gt = np.zeros((n, 14, 2))
    gt[:, :, 0] = 500 + 10 * np.arange(14)
    gt[:, 2] = (0, 0)
    gt[:, 9] = (30, 40)
    gt[:, 3] = (0, 80)
    gt[:, 8] = (0, 0)
    return gt


def test_lsp_torso_inclusive_threshold_and_head_part():
    gt = _lsp_layout(1)
    pred = gt.copy()
    pred[0, 0, 0] += 10  # exactly 0.2 of the torso: counted (<=)
    pred[0, 1, 0] += 10.01  # miss
    pred[0, 12, 1] += 11  # neck miss, head_top hit -> Head 50
    r = lsp_pck(pred, gt)
    assert r.correct.tolist() == [1, 0] + [1] * 10 + [0, 1]
    assert r.parts["Head"] == 50.0
    assert r.summary["Total"] == pytest.approx(100 * 12 / 14)
    # paper: longer diagonal (80 px), strict, 4/19 -> radius 16.8 px: all three offsets hit.
    paper = lsp_pck(pred, gt, convention="paper")
    assert paper.threshold == 4 / 19
    assert paper.correct.tolist() == [1] * 14


def test_format_table_and_json_shape():
    gt = _lsp_layout(3)
    r = lsp_pck(gt + 1.0, gt)
    table = format_table(r)
    assert "Total" in table and "100.0" in table and "head_top" in table
    payload = r.to_json()
    for key in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"):
        assert payload[key] == 100.0
    assert "Mean" not in payload


# ---------------------------------------------------------------------------------------------
# Sensitivity checks on the external vectors (metrics.md s.2.3 and s.3.3)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def m1(refdata: Path):
    """(pred, gt, scored, head_boxes) of vector M1 (bearpaw hg_s2_b1 on the MPII validation set)."""
    gt, scored, boxes = read_mpii_gt(refdata / MPII_GT)
    pred = read_predictions(refdata / "anibali-eval-mpii-pose/bearpaw-hg_s2_b1.mat")
    return pred, gt, scored, boxes


@pytest.mark.parametrize(("shift", "expected"), [(0, "86.76"), (-1, "86.53"), (1, "86.96")])
def test_m1_pixel_shift(m1, shift, expected):
    pred, gt, scored, boxes = m1
    r = mpii_pckh(pred + shift, gt, scored, head_boxes=boxes)
    assert f"{r.summary['Mean']:.2f}" == expected


def test_m1_sc_bias_omitted_gives_92_56(m1):
    """92.56 = full diagonal, threshold 0.5, raw GT head_top, standard 14-joint mean.

    The paper convention at 0.5 is not that number: its head pull changes head_top only.
    """
    pred, gt, scored, boxes = m1
    diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    no_bias = mpii_pckh(pred, gt, scored, head_diag=diag / 0.6)
    assert f"{no_bias.summary['Mean']:.2f}" == "92.56"
    paper = mpii_pckh(pred, gt, scored, head_boxes=boxes, convention="paper", threshold=0.5)
    diff = np.flatnonzero(paper.correct != no_bias.correct)
    assert diff.tolist() == [9]  # head_top only
    assert paper.summary["Mean"] == pytest.approx(np.mean(paper.per_joint))  # all 16 joints


def test_m1_zero_coordinate_entries_are_scored_misses(m1):
    pred, gt, scored, boxes = m1
    zero = (gt == 0).any(axis=-1) & scored
    assert int(zero.sum()) == 13
    r = mpii_pckh(pred, gt, scored & ~zero, head_boxes=boxes)
    assert f"{r.summary['Mean']:.2f}" == "86.79"


def _lsp(refdata: Path, algo: str, gt_name: str = "LSP-joints-PC.mat"):
    """(pred, gt test split, occluded flags) for one farrajota algorithm."""
    gt = read_lsp_gt(refdata / LSP_DIR / gt_name)[1000:]
    flags = read_variables(refdata / LSP_DIR / gt_name, "gt")["joints"][2].T[1000:]
    pred = read_predictions(refdata / LSP_DIR / "algorithms" / algo / "pred_keypoints_lsp_pc.mat")
    return pred, gt, flags == 1


def _pck_total(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, mask=None) -> float:
    """Pooled PCK@0.2 in percent over ``mask`` (all joints when None)."""
    hit = normalised_distances(pred, gt, norm) <= 0.2
    mask = np.ones_like(hit) if mask is None else mask
    return 100.0 * hit[mask].mean()


@pytest.mark.parametrize(
    ("algo", "correct", "occluded_out", "bbox", "swapped"),
    [
        ("WeiCVPR16", 90.500, 92.615, 95.907, 90.600),
        ("YangCVPR16", 73.557, 76.155, 89.357, 73.643),
    ],
)
def test_lsp_sensitivity(refdata, algo, correct, occluded_out, bbox, swapped):
    pred, gt, occluded = _lsp(refdata, algo)
    assert round(lsp_pck(pred, gt).summary["Total"], 3) == correct
    torso = np.linalg.norm(gt[:, 9] - gt[:, 2], axis=-1)
    assert round(_pck_total(pred, gt, torso), 3) == correct
    assert round(_pck_total(pred, gt, torso, ~occluded), 3) == occluded_out
    side = (gt.max(axis=1) - gt.min(axis=1)).max(axis=1)
    assert round(_pck_total(pred, gt, side), 3) == bbox
    other = np.linalg.norm(gt[:, 8] - gt[:, 3], axis=-1)
    assert round(_pck_total(pred, gt, other), 3) == swapped
