"""Skeleton overlays and image grids for eyeballing datasets and predictions (RGB uint8)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from hourglass.joints import LSP_JOINTS, MPII_JOINTS, skeleton_links

# Person's left limbs and right limbs in two distinct colours (RGB), centre line in a third.
LEFT_COLOUR = (255, 140, 0)  # orange
RIGHT_COLOUR = (0, 160, 255)  # blue
CENTRE_COLOUR = (40, 220, 40)  # green


def _joint_names(num_joints: int) -> tuple[str, ...]:
    """Joint names of the order with ``num_joints`` joints (MPII 16, LSP 14)."""
    return LSP_JOINTS if num_joints == len(LSP_JOINTS) else MPII_JOINTS


def _joint_colour(j: int, num_joints: int = len(MPII_JOINTS)) -> tuple[int, int, int]:
    """Colour of joint j by its side (from its name prefix in the MPII or LSP order)."""
    names = _joint_names(num_joints)
    name = names[j] if j < len(names) else ""
    if name.startswith("l_"):
        return LEFT_COLOUR
    if name.startswith("r_"):
        return RIGHT_COLOUR
    return CENTRE_COLOUR


def _link_colour(a: int, b: int, num_joints: int = len(MPII_JOINTS)) -> tuple[int, int, int]:
    """A link takes the side colour of whichever end is lateral (centre if neither is)."""
    ca, cb = _joint_colour(a, num_joints), _joint_colour(b, num_joints)
    return cb if ca == CENTRE_COLOUR else ca


def draw_skeleton(
    image: np.ndarray,
    joints: np.ndarray,
    visibility: np.ndarray,
    scale: float = 1.0,
    radius: int | None = None,
    colour: tuple[int, int, int] | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the skeleton (MPII 16 or LSP 14 joints, ``skeleton_links``) drawn:
    visible joints filled, occluded hollow, absent (-1) not drawn; ``scale`` maps joint pixel
    coordinates to ``image`` pixels (pixel-centre convention preserved for integer upscaling);
    ``colour`` draws everything in one colour instead of by body side."""
    out = np.ascontiguousarray(image.copy())
    pts = (np.asarray(joints, np.float64) + 0.5) * scale - 0.5
    vis = np.asarray(visibility)
    r = radius if radius is not None else max(1, round(out.shape[0] / 40))
    thickness = thickness if thickness is not None else max(1, r // 2)
    shift = 4
    n = len(vis)
    fixed = np.round(np.nan_to_num(pts, nan=-1e4) * (1 << shift)).astype(np.int64)
    for a, b in skeleton_links(n):
        if vis[a] >= 0 and vis[b] >= 0:
            p, q = tuple(int(v) for v in fixed[a]), tuple(int(v) for v in fixed[b])
            cv2.line(out, p, q, colour or _link_colour(a, b, n), thickness, cv2.LINE_AA, shift)
    for j in range(n):
        if vis[j] < 0:
            continue
        centre = tuple(int(v) for v in fixed[j])
        fill = -1 if vis[j] > 0 else max(1, thickness)
        cv2.circle(out, centre, r << shift, colour or _joint_colour(j, n), fill, cv2.LINE_AA, shift)
    return out


def preview_grid(
    images: np.ndarray,
    joints: np.ndarray | None = None,
    visibility: np.ndarray | None = None,
    cols: int = 8,
    scale: int = 2,
    pad: int = 2,
) -> np.ndarray:
    """RGB uint8 grid of images upscaled by ``scale`` (nearest), skeletons drawn when given."""
    n = len(images)
    if n == 0:
        return np.zeros((1, 1, 3), np.uint8)
    h, w = images.shape[1] * scale, images.shape[2] * scale
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        tile = images[i]
        if tile.ndim == 2:
            tile = np.repeat(tile[..., None], 3, axis=2)
        tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_NEAREST)
        if joints is not None:
            vis = visibility[i] if visibility is not None else np.ones(len(joints[i]), np.int8)
            tile = draw_skeleton(tile, joints[i], vis, scale=scale)
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = tile
    return grid


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG atomically (temp file in the same folder, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
