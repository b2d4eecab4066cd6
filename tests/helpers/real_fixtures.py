"""Helpers for the real-dataset tests: generated photos, small person tables, fixture caches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hourglass.datasets.cache import SPLIT_NAMES
from hourglass.datasets.crops import CropSpec
from hourglass.datasets.real_cache import build_real_cache
from hourglass.datasets.records import PersonTable
from hourglass.joints import LSP_JOINTS, MPII_JOINTS

# 16 well separated colours (RGB), one per joint.
PALETTE = np.array(
    [[(i * 67) % 256, (i * 151 + 40) % 256, (255 - i * 97) % 256] for i in range(16)], np.uint8
)


def write_photo(path: Path, width: int, height: int, joints=None, seed: int = 0) -> np.ndarray:
    """A smooth random RGB photo (JPEG at ``path`` unless it ends in .png), optionally with a
    coloured disc (radius 7) at each joint; returns the RGB array."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    if joints is not None:
        for j, (x, y) in enumerate(np.round(joints).astype(int)):
            cv2.circle(image, (int(x), int(y)), 7, PALETTE[j].tolist(), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return image


def grid_pose(centre, spacing=34.0, joints=16) -> np.ndarray:
    """Joints on a 4 x 4 grid around ``centre`` (far enough apart for colour checks)."""
    k = np.arange(joints)
    return np.stack(
        [centre[0] + (k % 4 - 1.5) * spacing, centre[1] + (k // 4 - 1.5) * spacing], 1
    ).astype(np.float64)


def person_table(
    images: list[str], joints: np.ndarray, vis: np.ndarray, split: np.ndarray, kind: str
) -> PersonTable:
    """A PersonTable of MPII (``head_diagonal``) or LSP (``torso``) joints."""
    n, j = joints.shape[:2]
    mpii = kind == "mpii"
    return PersonTable(
        image=list(images),
        joints=joints.astype(np.float64),
        visibility=vis.astype(np.int8),
        normaliser=np.full(n, 40.0),
        split=np.asarray(split, np.uint8),
        source_index=np.arange(n),
        dataset="mpii" if mpii else "lsp",
        joint_names=MPII_JOINTS if mpii else LSP_JOINTS,
        normaliser_kind="head_diagonal" if mpii else "torso",
        family=None if mpii else np.zeros(n, np.int16),
        family_names=() if mpii else ("lsp", "lspet"),
    )


def fixture_cache(
    folder: Path, kind: str, splits: dict[str, int], size: int = 64, seed: int = 0
) -> Path:
    """Generated photos with random poses, cut into a cache at ``folder/<kind>.h5``."""
    rng = np.random.default_rng(seed)
    j = 16 if kind == "mpii" else 14
    names, poses, split = [], [], []
    for name, count in splits.items():
        for _ in range(count):
            i = len(names)
            w, h = int(rng.integers(140, 220)), int(rng.integers(140, 220))
            centre = (w / 2 + rng.uniform(-20, 20), h / 2 + rng.uniform(-20, 20))
            pose = grid_pose(centre, spacing=rng.uniform(14, 24), joints=j)
            pose += rng.normal(0, 3, pose.shape)
            write_photo(folder / "images" / f"p{i:04d}.jpg", w, h, pose, seed=i)
            names.append(f"images/p{i:04d}.jpg")
            poses.append(pose)
            split.append(SPLIT_NAMES.index(name))
    poses = np.stack(poses)
    vis = np.ones(poses.shape[:2], np.int8)
    table = person_table(names, poses, vis, np.array(split), kind)
    path = folder / f"{kind}.h5"
    spec = CropSpec(size=size, store_size=round(size * 2 / 1.75))
    build_real_cache(table, folder, path, spec, provenance={}, workers=1, progress=False)
    return path
