"""LSP (``joints.mat`` 3x14x2000) and LSP Extended (``joints.mat`` 14x3x10000) readers.

docs/anchor.md 1.2: LSP's flag is 1 = occluded (inverted here to 1 = visible); the first 1,000 images
train, the last 1,000 test. LSPET's flag is 1 = annotated; flag-0 coordinates are garbage, so
those joints are absent (-1). All LSPET images train. Coordinates are MATLAB pixels (1-based);
they become 0-based. The normaliser is the standard torso ||l_sho - r_hip|| (docs/conventions.md 3), or the
other diagonal when a joint of it is unannotated (LSPET), else nan (the person is not scored).
``joint_order="mpii"`` maps to MPII's 16 (docs/conventions.md 5; pelvis and thorax synthesised as the hip
and shoulder midpoints, as bearpaw/pytorch-pose ``gen_lsp.m`` does) for a shared model head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from hourglass.datasets.cache import SPLIT_NAMES
from hourglass.datasets.records import PersonTable
from hourglass.errors import AlposeError
from hourglass.joints import LSP_JOINTS, LSP_TO_MPII, MPII_JOINTS
from hourglass.metrics import LSP_L_HIP, LSP_L_SHOULDER, LSP_R_HIP, LSP_R_SHOULDER

TRAIN, TEST = SPLIT_NAMES.index("train"), SPLIT_NAMES.index("test")
LSP_TRAIN = 1000  # docs/anchor.md 1.2: LSP[0:1000] train, LSP[1000:2000] test


def _load_joints(path: Path) -> np.ndarray:
    if not path.is_file():
        raise AlposeError(f"no joints.mat at {path}; see data/README.md for the layout")
    try:
        return np.asarray(scipy.io.loadmat(path)["joints"], np.float64)
    except Exception as err:
        raise AlposeError(
            f"cannot read {path} ({type(err).__name__}: {err}); download it again"
        ) from None


def read_lsp_joints(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """LSP joints (N,14,2) 0-based and visibility (N,14) (1 visible, 0 occluded)."""
    raw = _load_joints(Path(path))
    if raw.ndim != 3 or raw.shape[:2] != (3, 14):
        raise AlposeError(f"{path}: LSP joints.mat must be 3x14xN, got {raw.shape}")
    joints = raw[:2].transpose(2, 1, 0) - 1
    vis = (1 - raw[2].T).astype(np.int8)  # LSP: 1 = occluded
    return joints, vis


def read_lspet_joints(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """LSPET joints (N,14,2) 0-based and visibility (N,14) (1 annotated, -1 absent)."""
    raw = _load_joints(Path(path))
    if raw.ndim != 3 or raw.shape[:2] != (14, 3):
        raise AlposeError(f"{path}: LSPET joints.mat must be 14x3xN, got {raw.shape}")
    joints = raw[:, :2].transpose(2, 0, 1) - 1
    vis = np.where(raw[:, 2].T > 0, 1, -1).astype(np.int8)
    joints[vis < 0] = 0.0  # garbage coordinates of unannotated joints
    return joints, vis


def torso(joints: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """(N,) ||l_sho - r_hip||, else ||r_sho - l_hip||, else nan (in LSP joint order)."""
    a = np.linalg.norm(joints[:, LSP_L_SHOULDER] - joints[:, LSP_R_HIP], axis=-1)
    b = np.linalg.norm(joints[:, LSP_R_SHOULDER] - joints[:, LSP_L_HIP], axis=-1)
    has_a = (vis[:, LSP_L_SHOULDER] >= 0) & (vis[:, LSP_R_HIP] >= 0)
    has_b = (vis[:, LSP_R_SHOULDER] >= 0) & (vis[:, LSP_L_HIP] >= 0)
    return np.where(has_a, a, np.where(has_b, b, np.nan))


def to_mpii_order(joints: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LSP (N,14) -> MPII (N,16); pelvis/thorax = hip/shoulder midpoints (absent if one is)."""
    n = len(joints)
    out, out_vis = np.zeros((n, 16, 2)), np.full((n, 16), -1, np.int8)
    out[:, list(LSP_TO_MPII)], out_vis[:, list(LSP_TO_MPII)] = joints, vis
    for target, (a, b) in ((6, (2, 3)), (7, (12, 13))):  # MPII pelvis, thorax
        out[:, target] = (out[:, a] + out[:, b]) / 2
        out_vis[:, target] = np.where(
            (out_vis[:, a] >= 0) & (out_vis[:, b] >= 0),
            np.minimum(out_vis[:, a], out_vis[:, b]),
            -1,
        )
    return out, out_vis


def _image_dir(root: Path, what: str) -> None:
    if not root.is_dir():
        raise AlposeError(
            f"{what} root {root} does not exist; download it there (--download) or pass the folder"
        )
    if not (root / "joints.mat").is_file() or not (root / "images").is_dir():
        raise AlposeError(
            f"wrong {what} layout in {root}: expected joints.mat and images/; see data/README.md"
        )


def read_lsp(
    root: str | Path | None,
    lspet: str | Path | None = None,
    *,
    lspet_count: int | None = None,
    lspet_test: int = 0,
    joint_order: str = "lsp",
) -> PersonTable:
    """Persons of LSP (train + test) and/or LSPET (train, or its last ``lspet_test`` as test).

    The anchor pool is LSP[0:1000] followed by LSPET; ``family`` tells which (``lsp``/``lspet``).
    """
    parts: list[tuple] = []
    if root is not None:
        root = Path(root)
        _image_dir(root, "LSP")
        joints, vis = read_lsp_joints(root / "joints.mat")
        n = len(joints)
        split = np.where(np.arange(n) < LSP_TRAIN, TRAIN, TEST)
        names = [f"images/im{i + 1:04d}.jpg" for i in range(n)]
        parts.append((names, joints, vis, split, np.arange(n), 0, root))
    if lspet is not None:
        lspet = Path(lspet)
        _image_dir(lspet, "LSPET")
        joints, vis = read_lspet_joints(lspet / "joints.mat")
        n = min(len(joints), lspet_count or len(joints))
        joints, vis = joints[:n], vis[:n]
        split = np.where(np.arange(n) >= n - lspet_test, TEST, TRAIN)
        names = [f"images/im{i + 1:05d}.jpg" for i in range(n)]
        parts.append((names, joints, vis, split, np.arange(n), 1, lspet))
    if not parts:
        raise AlposeError("no LSP or LSPET folder given")
    joints = np.concatenate([p[1] for p in parts])
    vis = np.concatenate([p[2] for p in parts])
    norm = torso(joints, vis)
    names_out, order = (LSP_JOINTS, "lsp")
    if joint_order == "mpii":
        joints, vis = to_mpii_order(joints, vis)
        names_out, order = MPII_JOINTS, "mpii"
    elif joint_order != "lsp":
        raise AlposeError(f"joint_order must be 'lsp' or 'mpii', got '{joint_order}'")
    # Image paths are relative to the folder each part came from (absolute when two folders).
    image = [str(p[6] / name) if len(parts) > 1 else name for p in parts for name in p[0]]
    split = np.concatenate([p[3] for p in parts]).astype(np.uint8)
    return PersonTable(
        image=image,
        joints=joints,
        visibility=vis,
        normaliser=norm,
        split=split,
        source_index=np.concatenate([p[4] for p in parts]).astype(np.int64),
        dataset="lsp" if root is not None else "lspet",
        joint_names=names_out,
        normaliser_kind="torso",
        family=np.concatenate([np.full(len(p[0]), p[5], np.int16) for p in parts]),
        family_names=("lsp", "lspet"),
        info={
            "joint_order": order,
            "train": int((split == TRAIN).sum()),
            "test": int((split == TEST).sum()),
            "unscored_no_torso": int(np.isnan(norm).sum()),
        },
    )
