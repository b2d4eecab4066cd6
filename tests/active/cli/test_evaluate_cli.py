"""``alpose evaluate``: published MPII/LSP vectors end to end, file layouts, and error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from hourglass.metrics import mpii_pckh
from hourglass.prediction_files import read_predictions, read_variables

PARTS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
MPII_GT = "bearpaw-pytorch-pose/detections_our_format.mat"
LSP_DIR = "farrajota-human-pose-benchmark"

# metrics.md s.2.1 expected values (published, bearpaw/pytorch-pose README).
MPII_VECTORS = {
    "M1": ("bearpaw-hg_s2_b1.mat", "95.80 94.57 88.12 83.31 86.24 80.88 77.44 86.76"),
    "M2": ("bearpaw-hg_s8_b1.mat", "96.79 95.19 90.08 85.32 87.48 84.26 80.73 88.64"),
}
M1_CORRECT = [1648, 2007, 2500, 2482, 2007, 1631, 2602, 2867]
M1_CORRECT += [2864, 2809, 2448, 2588, 2780, 2788, 2582, 2415]
MPII_SCORED = [2115, 2485, 2889, 2888, 2478, 2119, 2878, 2932]
MPII_SCORED += [2932, 2932, 2928, 2935, 2944, 2944, 2932, 2909]
# metrics.md s.3 expected values (published, farrajota/human-pose-benchmark README, PC table).
LSP_VECTORS = {
    "WangLiCVPR13": "84.7 57.1 43.7 36.7 56.7 52.4 50.8 54.6",
    "TompsonNIPS14": "90.6 79.2 67.9 63.4 69.5 71.0 64.2 72.3",
    "YangCVPR16": "90.6 78.1 73.8 68.8 74.8 69.9 58.9 73.6",
    "RafiBMVC16": "95.8 86.2 79.3 75.0 86.6 83.8 79.8 83.8",  # MAT v7.3
    "WeiCVPR16": "97.8 92.5 87.0 83.9 91.5 90.8 89.9 90.5",
    "BulatTzimiropoulosECCV16": "97.2 92.1 88.1 85.2 92.2 91.4 88.7 90.7",
}


def _evaluate(cli, tmp_path: Path, *args) -> tuple[dict, str]:
    """Run ``alpose evaluate ARGS --json``; returns (JSON payload, stdout); asserts success."""
    out = tmp_path / "result.json"
    status, stdout, stderr = cli("evaluate", *args, "--json", out)
    assert status == 0, stderr
    return json.loads(out.read_text()), stdout


def _headline(payload: dict, key: str) -> list[float]:
    """The 7 parts then Mean/Total, as published tables order them."""
    return [payload[p] for p in PARTS] + [payload[key]]


# ---------------------------------------------------------------------------------------------
# MPII
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", sorted(MPII_VECTORS))
def test_mpii_published_vectors(cli, refdata, tmp_path, vector):
    pred_name, published = MPII_VECTORS[vector]
    payload, stdout = _evaluate(
        cli,
        tmp_path,
        "--gt",
        refdata / MPII_GT,
        "--pred",
        refdata / "anibali-eval-mpii-pose" / pred_name,
    )
    expected = [float(x) for x in published.split()]
    np.testing.assert_allclose(_headline(payload, "Mean"), expected, atol=0.005 + 1e-9, rtol=0)
    assert " ".join(f"{v:.2f}" for v in _headline(payload, "Mean")) == published
    assert published.split()[-1] in stdout
    assert list(payload["scored"].values()) == MPII_SCORED
    assert payload["dataset"] == "mpii" and payload["convention"] == "standard"


def test_mpii_m1_counts_and_extra_summaries(cli, refdata, tmp_path):
    payload, stdout = _evaluate(
        cli,
        tmp_path,
        "--gt",
        refdata / MPII_GT,
        "--pred",
        refdata / "anibali-eval-mpii-pose/bearpaw-hg_s2_b1.mat",
    )
    assert list(payload["correct"].values()) == M1_CORRECT
    summary = payload["summary"]
    assert f"{summary['Mean_weighted']:.2f}" == "87.30"
    assert f"{summary['PCKh@0.1']:.2f}" == "23.91"
    assert f"{summary['Head_official']:.2f}" == "96.74"
    assert "Mean_weighted 87.30" in stdout


def test_tompson_h5_matlab_axis_order_matches_pos_pred_src(cli, refdata, tmp_path):
    """tompson.h5 is (2,16,N) in h5py: it must score exactly like the GT file's pos_pred_src."""
    payload, _ = _evaluate(
        cli,
        tmp_path,
        "--gt",
        refdata / MPII_GT,
        "--pred",
        refdata / "anibali-eval-mpii-pose/tompson.h5",
    )
    gt_vars = read_variables(refdata / MPII_GT, "gt")
    # Same predictions written as a MAT v5 `pred` in MATLAB order (2,16,N): a second layout.
    as_mat = tmp_path / "tompson_pred.mat"
    savemat(as_mat, {"pred": gt_vars["pos_pred_src"].transpose(1, 0, 2)})
    other, _ = _evaluate(cli, tmp_path, "--gt", refdata / MPII_GT, "--pred", as_mat)
    np.testing.assert_allclose(
        list(payload["per_joint"].values()), list(other["per_joint"].values()), atol=1e-9
    )
    assert payload["Mean"] == pytest.approx(other["Mean"], abs=1e-9)
    h5 = read_predictions(refdata / "anibali-eval-mpii-pose/tompson.h5")
    assert h5.shape == (2958, 16, 2)
    np.testing.assert_allclose(h5, gt_vars["pos_pred_src"].transpose(2, 0, 1), atol=1e-4)


def test_pyranet_h5_with_score_column_loads(cli, refdata, tmp_path):
    path = refdata / "bearpaw-PyraNet/pred_multiscale_250.h5"
    with h5py.File(path, "r") as f:
        raw = f["preds"][()]
    assert raw.shape == (2958, 16, 3)
    preds = read_predictions(path)
    np.testing.assert_array_equal(preds, raw[:, :, :2].astype(np.float64))
    payload, _ = _evaluate(cli, tmp_path, "--gt", refdata / MPII_GT, "--pred", path)
    assert 85.0 < payload["Mean"] < 100.0  # a strong multi-scale model, scored in the right frame


def test_mpii_paper_convention_through_cli(cli, refdata, tmp_path):
    args = (
        "--gt",
        refdata / MPII_GT,
        "--pred",
        refdata / "anibali-eval-mpii-pose/bearpaw-hg_s2_b1.mat",
    )
    paper, stdout = _evaluate(cli, tmp_path, *args, "--convention", "paper")
    assert paper["threshold"] == 10 / 19 and paper["convention"] == "paper"
    assert paper["Mean"] == pytest.approx(np.mean(list(paper["per_joint"].values())))
    standard, _ = _evaluate(cli, tmp_path, *args, "--threshold", repr(10 / 19 / 0.6))
    # Without 0.6 the paper threshold t equals a standard threshold t/0.6: only head_top differs.
    differs = [j for j in paper["correct"] if paper["correct"][j] != standard["correct"][j]]
    assert differs == ["head_top"]
    assert "paper" in stdout


# ---------------------------------------------------------------------------------------------
# LSP
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", sorted(LSP_VECTORS))
def test_lsp_published_vectors(cli, refdata, tmp_path, algo):
    payload, stdout = _evaluate(
        cli,
        tmp_path,
        "--gt",
        refdata / LSP_DIR / "LSP-joints-PC.mat",
        "--pred",
        refdata / LSP_DIR / "algorithms" / algo / "pred_keypoints_lsp_pc.mat",
    )
    published = LSP_VECTORS[algo]
    computed = _headline(payload, "Total")
    expected = [float(x) for x in published.split()]
    assert np.all(np.abs(np.array(computed) - expected) <= 0.05 + 1e-9), (computed, expected)
    # The ties fall the published way too (count/N*100 then (a+b)/2, see metrics.lsp_pck).
    assert " ".join(f"{v:.1f}" for v in computed) == published
    assert "images 1001-2000" in stdout
    assert payload["dataset"] == "lsp" and "Mean" not in payload


def test_lsp_pc_predictions_against_oc_gt(cli, refdata, tmp_path):
    payload, _ = _evaluate(
        cli,
        tmp_path,
        "--gt",
        refdata / LSP_DIR / "LSP-joints-OC.mat",
        "--pred",
        refdata / LSP_DIR / "algorithms/YangCVPR16/pred_keypoints_lsp_pc.mat",
    )
    assert f"{payload['Total']:.2f}" == "69.44"


# ---------------------------------------------------------------------------------------------
# File layouts and errors on small synthetic files (no external data needed)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def synthetic(tmp_path: Path):
    """A 5-person MPII GT .mat and predictions with known errors; returns (gt path, preds)."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 400, size=(5, 16, 2))
    boxes = np.tile([[0.0, 0.0], [30.0, 40.0]], (5, 1, 1))  # diag 50 -> head size 30
    missing = np.zeros((16, 5), np.uint8)
    missing[0, :2] = 1
    pred = gt + rng.uniform(-20, 20, size=gt.shape)
    path = tmp_path / "gt.mat"
    savemat(
        path,
        {
            "pos_gt_src": gt.transpose(1, 2, 0),
            "jnt_missing": missing,
            "headboxes_src": boxes.transpose(1, 2, 0),
        },
    )
    return path, pred


def _write_h5(path: Path, arr: np.ndarray | dict, matlab73: bool = False) -> Path:
    """Write ``preds`` (or a dict of variables) to HDF5; ``matlab73`` mimics a MAT v7.3 file
    (MATLAB header in the user block, axes reversed as MATLAB's column-major order shows in h5py)."""
    variables = arr if isinstance(arr, dict) else {"preds": arr}
    userblock = 512 if matlab73 else 0
    with h5py.File(path, "w", userblock_size=userblock) as f:
        for name, value in variables.items():
            f[name] = value.T if matlab73 else value
    if matlab73:
        with open(path, "r+b") as f:
            f.write(b"MATLAB 7.3 MAT-file, Platform: test")
    return path


def test_prediction_layouts_all_score_alike(cli, synthetic, tmp_path):
    gt_path, pred = synthetic
    scores = np.concatenate([pred, np.ones((5, 16, 1))], axis=2)
    files = {
        "v5_preds": tmp_path / "a.mat",
        "v5_pred": tmp_path / "b.mat",
        "h5_njc": _write_h5(tmp_path / "c.h5", scores),
        "h5_matlab": _write_h5(tmp_path / "d.h5", scores.transpose(2, 1, 0)),
        "v73": _write_h5(tmp_path / "e.mat", pred, matlab73=True),
    }
    savemat(files["v5_preds"], {"preds": pred})
    savemat(files["v5_pred"], {"pred": pred.transpose(2, 1, 0)})
    gt_vars = read_variables(gt_path, "gt")
    boxes = gt_vars["headboxes_src"].transpose(2, 0, 1).reshape(5, 4)
    expected = mpii_pckh(
        pred,
        gt_vars["pos_gt_src"].transpose(2, 0, 1),
        gt_vars["jnt_missing"].T == 0,
        head_boxes=boxes,
    )
    assert 0 < expected.summary["Mean"] < 100  # the case discriminates
    for name, path in files.items():
        np.testing.assert_allclose(read_predictions(path), pred, err_msg=name)
        payload, _ = _evaluate(cli, tmp_path, "--gt", gt_path, "--pred", path)
        assert list(payload["correct"].values()) == expected.correct.tolist(), name
        assert payload["scored"]["r_ankle"] == 3
    # The GT itself as MAT v7.3: its (16,2,N) / (16,N) / (2,2,N) variables need the axis reversal.
    gt73 = _write_h5(tmp_path / "gt73.mat", gt_vars, matlab73=True)
    payload, _ = _evaluate(cli, tmp_path, "--gt", gt73, "--pred", files["v5_preds"])
    assert list(payload["correct"].values()) == expected.correct.tolist()


def test_json_written_atomically_into_new_folder(cli, synthetic, tmp_path):
    gt_path, pred = synthetic
    savemat(tmp_path / "p.mat", {"preds": pred})
    out = tmp_path / "new" / "dir" / "pckh.json"
    status, stdout, _ = cli(
        "evaluate", "--gt", gt_path, "--pred", tmp_path / "p.mat", "--json", out
    )
    assert status == 0
    payload = json.loads(out.read_text())
    assert set(PARTS) | {"Mean", "summary", "per_joint", "correct", "scored"} <= set(payload)
    assert [p.name for p in out.parent.iterdir()] == ["pckh.json"]  # no temp file left
    assert f"wrote {out}" in stdout


def _assert_one_error(status: int, stdout: str, stderr: str, *fragments: str) -> None:
    """Exit status 2, exactly one ``error:`` line naming ``fragments``, and no traceback."""
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr + stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_gt_file(cli, tmp_path):
    result = cli("evaluate", "--gt", tmp_path / "nope.mat", "--pred", tmp_path / "p.mat")
    _assert_one_error(*result, "ground-truth file not found", "nope.mat")


def test_missing_pred_file(cli, synthetic, tmp_path):
    gt_path, _ = synthetic
    result = cli("evaluate", "--gt", gt_path, "--pred", tmp_path / "absent.h5")
    _assert_one_error(*result, "prediction file not found", "absent.h5")


@pytest.mark.parametrize("name", ["corrupt.mat", "corrupt.h5"])
def test_corrupt_files(cli, synthetic, tmp_path, name):
    gt_path, _ = synthetic
    bad = tmp_path / name
    bad.write_bytes(b"this is not a MATLAB or HDF5 file\n" * 4)
    _assert_one_error(*cli("evaluate", "--gt", gt_path, "--pred", bad), name)
    _assert_one_error(*cli("evaluate", "--gt", bad, "--pred", gt_path), name)


def test_shape_mismatch_names_both_shapes(cli, synthetic, tmp_path):
    gt_path, pred = synthetic
    savemat(tmp_path / "short.mat", {"preds": pred[:3]})
    result = cli("evaluate", "--gt", gt_path, "--pred", tmp_path / "short.mat")
    _assert_one_error(*result, "(3, 16, 2)", "(5, 16, 2)")


def test_missing_variable_and_bad_gt_shape(cli, synthetic, tmp_path):
    gt_path, pred = synthetic
    savemat(tmp_path / "wrong.mat", {"estimates": pred})
    result = cli("evaluate", "--gt", gt_path, "--pred", tmp_path / "wrong.mat")
    _assert_one_error(*result, "'preds' or 'pred'", "estimates")
    result = cli("evaluate", "--gt", tmp_path / "wrong.mat", "--pred", tmp_path / "wrong.mat")
    _assert_one_error(*result, "cannot tell the dataset", "estimates")
    savemat(tmp_path / "partgt.mat", {"pos_gt_src": np.zeros((16, 2, 5))})
    result = cli("evaluate", "--gt", tmp_path / "partgt.mat", "--pred", gt_path)
    _assert_one_error(*result, "'jnt_missing'", "found: pos_gt_src")
    gt_vars = read_variables(gt_path, "gt")
    savemat(tmp_path / "badgt.mat", {**gt_vars, "pos_gt_src": np.zeros((14, 2, 5))})
    result = cli("evaluate", "--gt", tmp_path / "badgt.mat", "--pred", gt_path)
    _assert_one_error(*result, "(14, 2, 5)", "(16, 2, N)")


def test_real_subprocess_has_no_traceback(synthetic, tmp_path):
    """The installed console script turns a bad input into one line and status 2."""
    gt_path, _ = synthetic
    script = Path(sys.executable).with_name("alpose")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "active.cli"]
    proc = subprocess.run(
        [*cmd, "evaluate", "--gt", str(gt_path), "--pred", str(tmp_path / "missing.mat")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_one_error(proc.returncode, proc.stdout, proc.stderr, "missing.mat")
