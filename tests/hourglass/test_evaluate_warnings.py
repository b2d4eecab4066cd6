"""``alpose evaluate`` on predictions or ground truth that make the numbers suspect: NaN predictions
(counted as misses) and zero head boxes or torsos (those persons not scored) each give one
``warning:`` line with the count; clean files give none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from hourglass.metrics import lsp_pck, mpii_pckh

N = 5


def _mpii_gt(path: Path, boxes: np.ndarray) -> np.ndarray:
    """An N-person MPII GT file with every joint annotated; returns the joints (N, 16, 2)."""
    gt = np.random.default_rng(0).uniform(100, 400, size=(N, 16, 2))
    savemat(
        path,
        {
            "pos_gt_src": gt.transpose(1, 2, 0),
            "jnt_missing": np.zeros((16, N), np.uint8),
            "headboxes_src": boxes.transpose(1, 2, 0),
        },
    )
    return gt


def _boxes(zero: int = 0) -> np.ndarray:
    """(N, 2, 2) head boxes [x1 y1; x2 y2] of diagonal 50, the first ``zero`` of size 0."""
    boxes = np.tile([[0.0, 0.0], [30.0, 40.0]], (N, 1, 1))
    boxes[:zero] = 0.0
    return boxes


def _lsp_gt(path: Path, zero_torsos: int = 0) -> np.ndarray:
    """An N-image LSP joints.mat (3x14xN); the first ``zero_torsos`` have l_shoulder = r_hip."""
    gt = np.random.default_rng(1).uniform(50, 250, size=(N, 14, 2))
    gt[:zero_torsos, 9] = gt[:zero_torsos, 2]  # l_shoulder on r_hip: torso length 0
    joints = np.concatenate([gt, np.ones((N, 14, 1))], axis=2).transpose(2, 1, 0)
    savemat(path, {"joints": joints})
    return gt


def _evaluate(cli, tmp_path: Path, gt: Path, pred: np.ndarray) -> tuple[dict, str]:
    pred_path = tmp_path / "pred.mat"
    savemat(pred_path, {"preds": pred})
    out = tmp_path / "result.json"
    status, _, err = cli("evaluate", "--gt", gt, "--pred", pred_path, "--json", out)
    assert status == 0, err
    assert "Traceback" not in err
    return json.loads(out.read_text()), err


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_all_nan_predictions_warn_with_the_count(cli, tmp_path):
    gt = _mpii_gt(tmp_path / "gt.mat", _boxes())
    payload, err = _evaluate(cli, tmp_path, tmp_path / "gt.mat", np.full_like(gt, np.nan))
    (line,) = _warnings(err)
    assert f"{N * 16} of {N * 16} scored joints" in line and "NaN" in line and "misses" in line
    assert payload["Mean"] == 0.0  # still scored: misses
    assert sum(payload["scored"].values()) == N * 16


def test_some_nan_predictions_are_counted(cli, tmp_path):
    gt = _mpii_gt(tmp_path / "gt.mat", _boxes())
    pred = gt.copy()
    pred[1, 3] = np.nan
    pred[2, 7, 0] = np.inf
    payload, err = _evaluate(cli, tmp_path, tmp_path / "gt.mat", pred)
    (line,) = _warnings(err)
    assert f"2 of {N * 16} scored joints" in line
    assert payload["correct"]["l_hip"] == N - 1


def test_zero_head_boxes_are_not_scored_and_said(cli, tmp_path):
    gt = _mpii_gt(tmp_path / "gt.mat", _boxes(zero=2))
    payload, err = _evaluate(cli, tmp_path, tmp_path / "gt.mat", gt + 1.0)
    (line,) = _warnings(err)
    assert f"2 of {N} persons" in line and "head box" in line and "not scored" in line
    assert set(payload["scored"].values()) == {N - 2}  # the two persons left out
    assert payload["Mean"] == 100.0  # the others: exact predictions


def test_zero_torsos_are_not_scored_and_said(cli, tmp_path):
    gt = _lsp_gt(tmp_path / "joints.mat", zero_torsos=1)
    payload, err = _evaluate(cli, tmp_path, tmp_path / "joints.mat", gt)
    (line,) = _warnings(err)
    assert f"1 of {N} persons" in line and "torso" in line and "not scored" in line
    assert set(payload["scored"].values()) == {N - 1}


def test_clean_files_give_no_warning(cli, tmp_path):
    gt = _mpii_gt(tmp_path / "gt.mat", _boxes())
    _, err = _evaluate(cli, tmp_path, tmp_path / "gt.mat", gt + 1.0)
    assert _warnings(err) == []
    assert err.strip() == ""


def test_library_results_carry_the_warnings():
    gt = np.random.default_rng(2).uniform(0, 100, size=(3, 16, 2))
    scored = np.ones((3, 16), bool)
    r = mpii_pckh(np.full_like(gt, np.nan), gt, scored, head_diag=np.array([50.0, 0.0, np.nan]))
    assert len(r.warnings) == 2
    assert "16 of 16 scored joints" in r.warnings[0]  # only the one person still scored
    assert "2 of 3 persons" in r.warnings[1]
    assert r.to_json()["warnings"] == r.warnings
    clean = lsp_pck(gt[:, :14] + 1.0, gt[:, :14])
    assert clean.warnings == [] and "warnings" not in clean.to_json()


@pytest.mark.parametrize("convention", ["standard", "paper"])
def test_published_vector_has_no_warning(refdata, convention):
    from hourglass.prediction_files import read_mpii_gt, read_predictions

    gt, scored, boxes = read_mpii_gt(refdata / "bearpaw-pytorch-pose/detections_our_format.mat")
    pred = read_predictions(refdata / "anibali-eval-mpii-pose/bearpaw-hg_s2_b1.mat")
    r = mpii_pckh(pred, gt, scored, head_boxes=boxes, convention=convention)
    assert r.warnings == []
