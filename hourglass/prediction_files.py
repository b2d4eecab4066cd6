"""Ground-truth and prediction files of MPII and LSP, read and scored (``alpose evaluate``).

File layouts (``docs/conventions.md``, "Evaluation files"):

* MPII GT: ``detections_our_format.mat`` (``pos_gt_src`` 16x2xN, ``jnt_missing`` 16xN,
  ``headboxes_src`` 2x2xN as ``[x1 y1; x2 y2]``), 1-based pixels.
* LSP GT: ``joints.mat`` (``joints`` 3x14xN; row 3, the occlusion flag, is ignored by PCK).
* Predictions: ``.mat`` with ``preds`` (N,J,2) or ``pred`` (2,J,N), MAT v5 or v7.3 (HDF5);
  ``.h5`` with ``preds`` (N,J,2|3) or in MATLAB axis order (2|3,J,N); a third column (score) is
  dropped. Predictions must be in the same pixel frame as the GT (1-based for MPII).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from scipy.io import loadmat

from hourglass.datasets.cache import open_for_reading
from hourglass.errors import AlposeError
from hourglass.metrics import PCKResult, lsp_pck, mpii_pckh

MPII_GT_VARS = ("pos_gt_src", "jnt_missing", "headboxes_src")
LSP_GT_VAR = "joints"
PRED_VARS = ("preds", "pred")
# MATLAB writes a 512-byte user block starting with this text before the HDF5 data (v7.3 files).
MAT73_MAGIC = b"MATLAB 7.3 MAT-file"
HDF5_SUFFIXES = (".h5", ".hdf5")
# LSP standard split: images 1-1000 train, 1001-2000 test (LSP README).
LSP_IMAGES, LSP_TEST = 2000, slice(1000, 2000)


# --------------------------------------------------------------------------------------------
# Generic file reading
# --------------------------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> None:
    """Raise a clear AlposeError when ``path`` is not an existing file."""
    if not path.is_file():
        raise AlposeError(f"{what} file not found: {path} (check the path passed to the flag)")


def _is_hdf5(path: Path) -> bool:
    """True for HDF5 containers, which includes MATLAB v7.3 .mat files."""
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _is_matlab73(path: Path) -> bool:
    """True when the HDF5 user block carries MATLAB's v7.3 header (or the name ends in .mat)."""
    with open(path, "rb") as f:
        return f.read(len(MAT73_MAGIC)) == MAT73_MAGIC or path.suffix.lower() == ".mat"


def _read_hdf5(path: Path, reverse_axes: bool) -> dict[str, np.ndarray]:
    """Root-level numeric datasets; ``reverse_axes`` undoes h5py's view of MATLAB v7.3 arrays."""
    out: dict[str, np.ndarray] = {}
    with open_for_reading(path) as f:
        for name, item in f.items():
            if isinstance(item, h5py.Dataset) and item.dtype.kind in "biuf":
                arr = np.asarray(item[()])
                out[name] = arr.transpose() if reverse_axes else arr
    return out


def _read_matv5(path: Path) -> dict[str, np.ndarray]:
    """Variables of a MAT v4-v7 file (scipy), without the ``__header__``-style entries."""
    return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}


def read_variables(path: Path, what: str) -> dict[str, np.ndarray]:
    """All variables of a .mat (v5 or v7.3) or .h5 file, in MATLAB axis order for .mat files."""
    path = Path(path)
    _require_file(path, what)
    if path.suffix.lower() in HDF5_SUFFIXES and not _is_hdf5(path):
        raise AlposeError(f"{what} file {path} is not a valid HDF5 file (damaged? re-export it)")
    try:
        if _is_hdf5(path):
            # MAT v7.3 is HDF5 with MATLAB's column-major axes reversed; plain .h5 is row-major.
            return _read_hdf5(path, reverse_axes=_is_matlab73(path))
        return _read_matv5(path)
    except Exception as err:  # scipy/h5py raise many types for a damaged file
        raise AlposeError(
            f"cannot read {what} file {path}: {type(err).__name__}: {err} "
            "(expected a MATLAB .mat or HDF5 .h5 file; re-download or re-export it)"
        ) from err


def _get(
    variables: dict[str, np.ndarray], names: tuple[str, ...], path: Path, what: str
) -> np.ndarray:
    """The first of ``names`` present in ``variables``, or an AlposeError listing what is there."""
    for name in names:
        if name in variables:
            return np.asarray(variables[name])
    found = ", ".join(sorted(variables)) or "none"
    wanted = " or ".join(repr(n) for n in names)
    raise AlposeError(f"{what} file {path} has no variable {wanted} (found: {found})")


def _expect_shape(arr: np.ndarray, expected: str, ok: bool, path: Path, name: str) -> None:
    """Raise an AlposeError naming the actual and the expected shape when ``ok`` is False."""
    if not ok:
        raise AlposeError(f"variable '{name}' in {path} has shape {arr.shape}, expected {expected}")


# --------------------------------------------------------------------------------------------
# Ground truth and prediction readers
# --------------------------------------------------------------------------------------------


def read_mpii_gt(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MPII detections_our_format.mat -> gt (N,16,2), scored (N,16), head boxes (N,4)."""
    path = Path(path)
    return _mpii_gt_from(read_variables(path, "ground-truth"), path)


def _mpii_gt_from(
    v: dict[str, np.ndarray], path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert the three MPII GT variables (MATLAB axis order) to row-per-person arrays."""
    pos, missing, boxes = (_get(v, (name,), path, "ground-truth") for name in MPII_GT_VARS)
    _expect_shape(
        pos, "(16, 2, N)", pos.ndim == 3 and pos.shape[:2] == (16, 2), path, MPII_GT_VARS[0]
    )
    n = pos.shape[2]
    _expect_shape(missing, f"(16, {n})", missing.shape == (16, n), path, MPII_GT_VARS[1])
    _expect_shape(boxes, f"(2, 2, {n})", boxes.shape == (2, 2, n), path, MPII_GT_VARS[2])
    gt = pos.transpose(2, 0, 1).astype(np.float64)
    scored = (
        missing.T == 0
    )  # docs/conventions.md 2.1: mask = 1 - jnt_missing (occluded joints count)
    head_boxes = boxes.transpose(2, 0, 1).reshape(n, 4).astype(np.float64)  # x1, y1, x2, y2
    return gt, scored, head_boxes


def read_lsp_gt(path: Path) -> np.ndarray:
    """LSP ``joints.mat`` (3x14xN) -> gt (N,14,2); the occlusion row is not used by PCK."""
    path = Path(path)
    return _lsp_gt_from(read_variables(path, "ground-truth"), path)


def _lsp_gt_from(v: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """Convert LSP ``joints`` (3x14xN, MATLAB order) to (N,14,2); refuse LSPET's 14x3xN."""
    joints = _get(v, (LSP_GT_VAR,), path, "ground-truth")
    if joints.ndim == 3 and joints.shape[:2] == (14, 3):
        raise AlposeError(
            f"{path} looks like LSPET (joints {joints.shape} = 14x3xN): it is training data with "
            "no PCK protocol; pass the LSP joints.mat (3x14x2000) instead"
        )
    ok = joints.ndim == 3 and joints.shape[0] in (2, 3) and joints.shape[1] == 14
    _expect_shape(joints, "(3, 14, N)", ok, path, LSP_GT_VAR)
    return joints[:2].transpose(2, 1, 0).astype(np.float64)


def _to_njc(arr: np.ndarray, name: str) -> np.ndarray | None:
    """(N,J,C) or MATLAB-order (C,J,N) with C in {2,3} -> (N,J,2) float64; None if neither."""
    if arr.ndim != 3:
        return None
    first, last = arr.shape[0] in (2, 3), arr.shape[-1] in (2, 3)
    # When both ends could be coordinates (N of 2 or 3) the variable's name decides:
    # MATLAB files store `pred` as 2xJxN, Python/HDF5 files store `preds` as NxJx2.
    matlab_order = first and (not last or name == "pred")
    if not (first or last):
        return None
    njc = arr.transpose(2, 1, 0) if matlab_order else arr
    return np.ascontiguousarray(njc[:, :, :2], dtype=np.float64)


def read_predictions(path: Path) -> np.ndarray:
    """Prediction file (.mat v5/v7.3 or .h5, either axis order, optional score) -> (N,J,2)."""
    path = Path(path)
    variables = read_variables(path, "prediction")
    arr = _get(variables, PRED_VARS, path, "prediction")
    name = next(n for n in PRED_VARS if n in variables)
    preds = _to_njc(arr, name)
    if preds is None:
        raise AlposeError(
            f"variable '{name}' in {path} has shape {arr.shape}, expected (N, J, 2|3) "
            "or MATLAB order (2|3, J, N)"
        )
    return preds


def detect_dataset(variables: dict[str, np.ndarray], path: Path) -> str:
    """'mpii' or 'lsp' from the GT variable names, or an AlposeError saying what was found."""
    if MPII_GT_VARS[0] in variables:
        return "mpii"
    if LSP_GT_VAR in variables:
        return "lsp"
    found = ", ".join(sorted(variables)) or "none"
    raise AlposeError(
        f"cannot tell the dataset of {path}: it has neither 'pos_gt_src' (MPII) nor 'joints' "
        f"(LSP) (found: {found}); pass an MPII detections_our_format.mat or LSP joints.mat"
    )


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _mismatch(
    pred: np.ndarray, gt_shape: tuple[int, ...], pred_path: Path, gt_path: Path
) -> AlposeError:
    """Shape-mismatch error naming both shapes and both files."""
    return AlposeError(
        f"predictions {pred_path} have shape {pred.shape} but the ground truth {gt_path} has "
        f"{gt_shape}; the prediction file must hold one (x, y) per GT person and joint, same order"
    )


def score_mpii(
    gt_arrays: tuple,
    pred: np.ndarray,
    files: tuple[Path, Path],
    convention: str,
    threshold: float | None,
) -> PCKResult:
    """PCKh of MPII predictions (N,16,2) against (gt, scored, head_boxes) from read_mpii_gt."""
    gt, scored, head_boxes = gt_arrays
    if pred.shape != gt.shape:
        raise _mismatch(pred, gt.shape, *files)
    return mpii_pckh(
        pred,
        gt,
        scored,
        head_boxes=head_boxes,
        convention=convention,
        threshold=threshold,
    )


def score_lsp(
    gt: np.ndarray,
    pred: np.ndarray,
    files: tuple[Path, Path],
    convention: str,
    threshold: float | None,
) -> PCKResult:
    """PCK of LSP predictions against gt (N,14,2); 1000 predictions vs 2000 GT = the test split."""
    note = None
    if gt.shape[0] == LSP_IMAGES and pred.shape[0] == LSP_TEST.stop - LSP_TEST.start:
        gt = gt[LSP_TEST]
        note = (
            "note: 1000 predictions vs 2000 GT images: scored against the standard LSP test "
            "split (images 1001-2000)"
        )
    if pred.shape != gt.shape:
        raise _mismatch(pred, gt.shape, *files)
    result = lsp_pck(pred, gt, threshold=threshold, convention=convention)
    if note:
        result.notes.append(note)
    return result


# dataset -> (GT variables -> GT arrays, scorer). The GT is checked before predictions are read.
DATASETS: dict[str, tuple[Callable, Callable[..., PCKResult]]] = {
    "mpii": (_mpii_gt_from, score_mpii),
    "lsp": (_lsp_gt_from, score_lsp),
}


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to a temp file beside ``path`` then os.replace it, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def evaluate(
    gt_path: Path,
    pred_path: Path,
    dataset: str | None = None,
    convention: str = "standard",
    threshold: float | None = None,
) -> PCKResult:
    """Read both files, pick the dataset (``None``: from the GT variables), score; raises
    AlposeError on any bad input. What makes the numbers suspect (NaN predictions, zero head
    boxes or torsos) is printed as one ``warning:`` line each on stderr (and kept in
    ``result.warnings``)."""
    if threshold is not None and not threshold > 0:
        raise AlposeError(f"--threshold must be > 0, got {threshold}")
    _require_file(gt_path, "ground-truth")
    _require_file(pred_path, "prediction")
    variables = read_variables(gt_path, "ground-truth")
    dataset = dataset or detect_dataset(variables, gt_path)
    parse_gt, score = DATASETS[dataset]
    gt = parse_gt(variables, gt_path)
    pred = read_predictions(pred_path)
    result = score(gt, pred, (pred_path, gt_path), convention, threshold)
    result.notes.insert(0, f"gt: {gt_path}  pred: {pred_path}  ({pred.shape[0]} samples)")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return result
