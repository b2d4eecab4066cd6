"""PCKh (MPII) and PCK (LSP) with explicit, documented conventions.

Two conventions exist and both are needed (``docs/conventions.md``):

* ``standard``: the community protocol (MPII PCKh@0.5 with 0.6 x head-box diagonal; LSP PCK@0.2
  by torso). It reproduces published leaderboard numbers to the printed digits.
* ``paper``: the lenient variant computed by the EGL++ / LearningLoss++ anchor code
  (``docs/anchor.md`` s.1.1, s.1.2, s.5, B5/B6). Paper tables are only comparable in
  this mode.

Shapes: N samples (persons), J joints, coordinates (x, y) in one pixel frame shared by the
prediction and the ground truth. All functions are vectorised over N and J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hourglass.joints import LSP_JOINTS, MPII_JOINTS

CONVENTIONS: tuple[str, ...] = ("standard", "paper")

# MPII head size = SC_BIAS x head-box diagonal; SC_BIAS = 0.6 from the official MPII
# `util_get_head_size.m:3-4` (also bearpaw/pytorch-pose `evaluation/eval_PCKh.py:13`).
MPII_SC_BIAS = 0.6
# Standard PCKh threshold (bearpaw `eval_PCKh.py:14`, MPII leaderboard "PCKh@0.5").
MPII_THRESHOLD = 0.5
# Second standard MPII threshold (docs/conventions.md 2.1 "PCKh@0.1"): exactly 0.1. HRNet's `mpii.py`
# reads row 11 of arange(0, 0.51, 0.01), i.e. 0.11 (a widespread bug, docs/conventions.md 2.1).
MPII_THRESHOLD_LOW = 0.1
# Anchor PCK grid is linspace(0, 1, 20) = k/19 (anchor `evaluation.py:69`); 10/19 = 0.5263 is the
# grid point nearest above 0.5 and 4/19 = 0.2105 the one nearest above 0.2 (docs/anchor.md s.5, B4).
PAPER_MPII_THRESHOLD = 10 / 19
PAPER_LSP_THRESHOLD = 4 / 19
# Anchor lambda_head = 0.8: GT head_top := 0.8 * head_top + 0.2 * upper_neck when both are
# annotated (anchor `configuration.yml:17`, `dataloader.py:184-186`; docs/anchor.md s.1.1).
PAPER_LAMBDA_HEAD = 0.8
# Standard LSP PCK threshold (farrajota/human-pose-benchmark `utils/evaluatePCK.m`; PCK@0.2).
LSP_THRESHOLD = 0.2

# MPII indices (docs/anchor.md s.5 / hourglass.joints.MPII_JOINTS).
MPII_UPPER_NECK, MPII_HEAD_TOP = 8, 9
# Pelvis (6) and thorax (7) are left out of the standard MPII mean (bearpaw `eval_PCKh.py:83-90`).
MPII_MEAN14 = np.array([j for j in range(16) if j not in (6, 7)])

# Reported parts, docs/conventions.md 2.1 item 5: Head = head_top only; others = mean of left and right.
MPII_PARTS: dict[str, tuple[int, ...]] = {
    "Head": (9,),
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
# LSP parts, docs/conventions.md 3.1 item 5 (farrajota `utils/genTablePCK.m`): Head = (neck + head_top)/2.
LSP_PARTS: dict[str, tuple[int, ...]] = {
    "Head": (12, 13),
    "Shoulder": (8, 9),
    "Elbow": (7, 10),
    "Wrist": (6, 11),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
# Torso for standard LSP PCK = ||l_shoulder - r_hip|| (farrajota `utils/getDistPCK.m:18,23`,
# 1-based joints 10 and 3). The anchor uses max of both diagonals (anchor `dataloader.py:277-283`).
LSP_L_SHOULDER, LSP_R_HIP, LSP_R_SHOULDER, LSP_L_HIP = 9, 2, 8, 3


@dataclass
class PCKResult:
    """Per-joint and per-part PCK(h) of one evaluation, in percent.

    ``per_joint`` is (J,) with nan where a joint has no scored instance; ``correct`` and
    ``scored`` are the (J,) integer counts behind it. ``warnings``: what the scoring met that
    makes the numbers suspect (non-finite predictions, zero normalisers), one line each.
    """

    per_joint: np.ndarray
    correct: np.ndarray
    scored: np.ndarray
    joint_names: tuple[str, ...]
    parts: dict[str, float]
    summary: dict[str, float]
    convention: str
    threshold: float
    dataset: str = "mpii"
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        """Name of the headline mean: ``Mean`` (MPII) or ``Total`` (LSP)."""
        return "Total" if self.dataset == "lsp" else "Mean"

    def to_json(self) -> dict:
        """JSON-ready dict: the part keys and Mean/Total at top level, then extras by name."""
        out: dict = {name: _json_float(v) for name, v in self.parts.items()}
        out[self.headline] = _json_float(self.summary[self.headline])
        out["summary"] = {k: _json_float(v) for k, v in self.summary.items()}
        out["per_joint"] = {
            n: _json_float(v) for n, v in zip(self.joint_names, self.per_joint, strict=True)
        }
        out["correct"] = dict(zip(self.joint_names, map(int, self.correct), strict=True))
        out["scored"] = dict(zip(self.joint_names, map(int, self.scored), strict=True))
        out.update(dataset=self.dataset, convention=self.convention, threshold=self.threshold)
        out["notes"] = list(self.notes)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _json_float(value: float) -> float | None:
    """Float for JSON, with nan -> None (JSON has no NaN)."""
    value = float(value)
    return None if math.isnan(value) else value


def normalised_distances(pred: np.ndarray, gt: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """(N,J,2), (N,J,2), (N,) -> (N,J) Euclidean error divided by each sample's reference length.

    Non-finite predictions or a zero normaliser give inf/nan, which every ``d < t`` test counts
    as a miss.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    norm = np.asarray(normaliser, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, J, 2)")
    if norm.shape != (pred.shape[0],):
        raise ValueError(f"normaliser {norm.shape} must be ({pred.shape[0]},)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.linalg.norm(pred - gt, axis=-1) / norm[:, None]


def _head_diagonal(
    head_boxes: np.ndarray | None, head_diag: np.ndarray | None, n: int
) -> np.ndarray:
    """(N,) head-box diagonal from exactly one of head_boxes (N,4 x1,y1,x2,y2) or head_diag (N,)."""
    if (head_boxes is None) == (head_diag is None):
        raise ValueError("give exactly one of head_boxes (N,4) or head_diag (N,)")
    if head_diag is not None:
        diag = np.asarray(head_diag, dtype=np.float64)
    else:
        boxes = np.asarray(head_boxes, dtype=np.float64)
        if boxes.shape != (n, 4):
            raise ValueError(f"head_boxes {boxes.shape} must be ({n}, 4) as x1, y1, x2, y2")
        diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if diag.shape != (n,):
        raise ValueError(f"head_diag {diag.shape} must be ({n},)")
    return diag


def _pull_head_top(gt: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Copy of MPII gt (N,16,2) with head_top moved 20% toward upper_neck where both are scored."""
    gt = gt.copy()
    both = scored[:, MPII_HEAD_TOP] & scored[:, MPII_UPPER_NECK]
    pulled = (
        PAPER_LAMBDA_HEAD * gt[:, MPII_HEAD_TOP] + (1 - PAPER_LAMBDA_HEAD) * gt[:, MPII_UPPER_NECK]
    )
    gt[both, MPII_HEAD_TOP] = pulled[both]
    return gt


def _counts(
    hit: np.ndarray, scored: np.ndarray, *, divide_first: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,J) hits and mask -> (correct (J,), scored (J,), percent (J,) with nan for 0/0).

    ``divide_first`` computes count/n*100 instead of 100*count/n; the two differ in the last bit,
    which decides the published one-decimal rounding of LSP part values sitting on .x5 ties.
    """
    correct = np.sum(hit & scored, axis=0).astype(np.int64)
    total = np.sum(scored, axis=0).astype(np.int64)
    n = np.maximum(total, 1)
    percent = correct / n * 100.0 if divide_first else 100.0 * correct / n
    return correct, total, np.where(total > 0, percent, np.nan)


def _mean(values: np.ndarray) -> float:
    """Unweighted mean that skips nan (joints with nothing scored); nan if all are nan."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _pooled(correct: np.ndarray, total: np.ndarray) -> float:
    """Count-weighted percent over the 14 standard MPII joints (pooled correct / pooled scored)."""
    n = int(total[MPII_MEAN14].sum())
    return 100.0 * float(correct[MPII_MEAN14].sum()) / n if n else float("nan")


def _parts(per_joint: np.ndarray, parts: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """Part name -> unweighted mean of its joints' percentages (e.g. left and right)."""
    return {name: _mean(per_joint[list(idx)]) for name, idx in parts.items()}


def _check_pose_arrays(
    pred: np.ndarray, gt: np.ndarray, joints: int
) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 (N,joints,2), or ValueError naming both shapes."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (joints, 2) or pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (N, {joints}, 2)")
    return pred, gt


def _bad_normalisers(
    norm: np.ndarray, mask: np.ndarray, what: str
) -> tuple[np.ndarray, str | None]:
    """``mask`` without the persons whose normaliser is zero, negative or not finite, and the
    warning that says how many persons (and scored joints) that leaves out (None: none)."""
    bad = ~(np.isfinite(norm) & (norm > 0))
    hit = bad & mask.any(axis=1)
    if not hit.any():
        return mask, None
    joints = int(mask[hit].sum())
    warning = (
        f"{int(hit.sum())} of {len(norm)} persons have a zero or invalid {what}; their "
        f"{joints} annotated joints are not scored (fix the ground truth's {what}s)"
    )
    return mask & ~bad[:, None], warning


def _non_finite(pred: np.ndarray, mask: np.ndarray) -> str | None:
    """The warning for scored joints whose prediction is NaN or infinite (they count as misses)."""
    bad = ~np.isfinite(pred).all(axis=-1) & mask
    if not bad.any():
        return None
    return (
        f"{int(bad.sum())} of {int(mask.sum())} scored joints have a NaN or infinite prediction; "
        "they are counted as misses (check the prediction file)"
    )


def mpii_pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    scored: np.ndarray,
    *,
    head_boxes: np.ndarray | None = None,
    head_diag: np.ndarray | None = None,
    convention: str = "standard",
    threshold: float | None = None,
) -> PCKResult:
    """MPII PCKh of pred (N,16,2) vs gt (N,16,2), scoring only ``scored`` (N,16) joints.

    ``scored`` is ``~jnt_missing`` (occluded but annotated joints count). standard: e < t with
    e = dist / (0.6 * head diagonal), t = 0.5; Mean over the 14 joints without pelvis/thorax.
    paper: e < t with e = dist / head diagonal, GT head_top pulled 20% toward the neck,
    t = 10/19; Mean over all 16 joints.
    standard summary: Mean (unweighted, 14 joints), Mean_weighted and PCKh@0.1 (count-weighted
    over the same 14 joints, as the leaderboard / HRNet "Mean@0.1"), Head_official (mean of
    upper_neck and head_top).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    pred, gt = _check_pose_arrays(pred, gt, len(MPII_JOINTS))
    scored = np.asarray(scored, dtype=bool)
    if scored.shape != gt.shape[:2]:
        raise ValueError(f"scored {scored.shape} must be {gt.shape[:2]}")
    diag = _head_diagonal(head_boxes, head_diag, gt.shape[0])
    scored, zero_heads = _bad_normalisers(diag, scored, "head box")
    warnings = [w for w in (_non_finite(pred, scored), zero_heads) if w]
    if convention == "paper":
        t = PAPER_MPII_THRESHOLD if threshold is None else float(threshold)
        dist = normalised_distances(pred, _pull_head_top(gt, scored), diag)
        correct, total, per_joint = _counts(dist < t, scored)
        summary = {"Mean": _mean(per_joint)}
    else:
        t = MPII_THRESHOLD if threshold is None else float(threshold)
        dist = normalised_distances(pred, gt, MPII_SC_BIAS * diag)
        correct, total, per_joint = _counts(dist < t, scored)
        low = _counts(dist < MPII_THRESHOLD_LOW, scored)[0]
        summary = {
            "Mean": _mean(per_joint[MPII_MEAN14]),
            "Mean_weighted": _pooled(correct, total),
            # Count-weighted like the leaderboard/HRNet "Mean@0.1" (M1: 23.91; unweighted is 23.72).
            "PCKh@0.1": _pooled(low, total),
            "Head_official": _mean(per_joint[[MPII_UPPER_NECK, MPII_HEAD_TOP]]),
        }
    return PCKResult(
        per_joint=per_joint,
        correct=correct,
        scored=total,
        joint_names=MPII_JOINTS,
        parts=_parts(per_joint, MPII_PARTS),
        summary=summary,
        convention=convention,
        threshold=t,
        dataset="mpii",
        warnings=warnings,
    )


def lsp_torso(gt: np.ndarray, convention: str = "standard") -> np.ndarray:
    """(N,14,2) LSP gt -> (N,) torso: l_sho-r_hip (standard) or the longer diagonal (paper)."""
    gt = np.asarray(gt, dtype=np.float64)
    torso = np.linalg.norm(gt[:, LSP_L_SHOULDER] - gt[:, LSP_R_HIP], axis=-1)
    if convention == "paper":
        other = np.linalg.norm(gt[:, LSP_R_SHOULDER] - gt[:, LSP_L_HIP], axis=-1)
        torso = np.maximum(torso, other)
    return torso


def lsp_pck(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    threshold: float | None = None,
    convention: str = "standard",
    scored: np.ndarray | None = None,
    torso: np.ndarray | None = None,
) -> PCKResult:
    """LSP PCK of pred (N,14,2) vs gt (N,14,2); every joint of every image is scored by default.

    standard: dist / ||l_sho - r_hip|| <= 0.2 (farrajota `getDistPCK.m`, `computePCK.m:8,14`).
    paper: dist / max(||l_sho - r_hip||, ||r_sho - l_hip||) < 4/19 (docs/anchor.md s.1.2, s.5).
    Total = mean of the 14 per-joint values (equal to the pooled mean since all are scored).
    ``scored`` (N,14) masks unannotated joints (LSPET) and ``torso`` (N,) replaces the normaliser
    (a non-finite one leaves that person unscored).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    pred, gt = _check_pose_arrays(pred, gt, len(LSP_JOINTS))
    norm = lsp_torso(gt, convention) if torso is None else np.asarray(torso, np.float64)
    mask = np.ones(gt.shape[:2], bool) if scored is None else np.asarray(scored, bool)
    mask, zero_torsos = _bad_normalisers(norm, mask, "torso length")
    warnings = [w for w in (_non_finite(pred, mask), zero_torsos) if w]
    dist = normalised_distances(pred, gt, np.where(mask.any(1), norm, 1.0))
    if convention == "paper":
        t = PAPER_LSP_THRESHOLD if threshold is None else float(threshold)
        hit = dist < t  # anchor `evaluation.py`: #(d < t)
    else:
        t = LSP_THRESHOLD if threshold is None else float(threshold)
        hit = dist <= t  # farrajota `computePCK.m:14`: <=
    # count/N*100 then (a+b)/2 reproduces every printed digit of the six docs/conventions.md 3 rows,
    # ties included; 100*count/N (bearpaw's MPII order) misprints 4 of those .x5 ties.
    correct, total, per_joint = _counts(hit, mask, divide_first=True)
    return PCKResult(
        per_joint=per_joint,
        correct=correct,
        scored=total,
        joint_names=LSP_JOINTS,
        parts=_parts(per_joint, LSP_PARTS),
        summary={"Total": _mean(per_joint)},
        convention=convention,
        threshold=t,
        dataset="lsp",
        warnings=warnings,
    )


def format_table(result: PCKResult) -> str:
    """Published-style part table (2 decimals MPII, 1 decimal LSP), summaries, then per joint."""
    digits = 1 if result.dataset == "lsp" else 2
    metric = "PCK" if result.dataset == "lsp" else "PCKh"
    keys = [*result.parts, result.headline]
    values = [*result.parts.values(), result.summary[result.headline]]
    width = 10
    lines = [
        f"{metric}@{result.threshold:.4g} ({result.dataset.upper()}, {result.convention})",
        "".join(f"{k:>{width}}" for k in keys),
        "".join(f"{v:>{width}.{digits}f}" for v in values),
    ]
    extras = {k: v for k, v in result.summary.items() if k != result.headline}
    if extras:
        lines.append("  ".join(f"{k} {v:.{digits}f}" for k, v in extras.items()))
    lines.append("per joint (correct / scored):")
    for name, pct, c, s in zip(
        result.joint_names, result.per_joint, result.correct, result.scored, strict=True
    ):
        lines.append(f"  {name:<11} {pct:>7.{digits}f}  ({c} / {s})")
    lines.extend(result.notes)
    return "\n".join(lines)
