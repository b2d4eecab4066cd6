"""The paper crop (docs/anchor.md 2.2-2.3) as affine maps, and cutting stored windows out of photos.

Pixel coordinates are 0-based with pixel centres on integers (as OpenCV); every map is a (2, 3)
affine matrix, batched as (B, 2, 3). A person's *window* is the centre of its joint box and its
extent m = max(h, w). The anchor's crop at scale s is the square of side s*m around the centre,
corners truncated to integers and clipped to the image, letterboxed (uniform scale, symmetric
zero padding) to the model input side S. The cache stores, per person, the larger square of side
``store_scale``*m (default 2.0, the largest training scale) resampled to T pixels, zero outside
the photo, so every training or evaluation crop can be cut from the stored pixels alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# docs/anchor.md 2.2: training draws s ~ U(1.5, 2.0); evaluation uses s = 1.75.
PAPER_TRAIN_SCALE = (1.5, 2.0)
PAPER_EVAL_SCALE = 1.75


@dataclass(frozen=True)
class CropSpec:
    """Crop settings of a real dataset (``dataset.crop`` in the config)."""

    size: int = 256  # model input side S
    store_size: int = 293  # stored side T; 293 = 256 * 2 / 1.75 keeps the eval crop ~1:1
    train_scale: tuple[float, float] = PAPER_TRAIN_SCALE
    eval_scale: float = PAPER_EVAL_SCALE
    store_scale: float = 2.0  # stored window / extent; must cover train_scale[1]

    def __post_init__(self) -> None:
        if self.store_scale < max(self.train_scale[1], self.eval_scale):
            raise ValueError("store_scale must cover the largest training and evaluation scale")

    def as_dict(self) -> dict:
        return {
            "train": list(self.train_scale),
            "eval": self.eval_scale,
            "store_scale": self.store_scale,
            "size": self.size,
            "store_size": self.store_size,
        }


# -- affine algebra (batched) -----------------------------------------------------------------
def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The map ``a o b`` (apply b first); shapes (..., 2, 3)."""
    lin = a[..., :2] @ b[..., :2]
    shift = (a[..., :2] @ b[..., 2:])[..., 0] + a[..., 2]
    return np.concatenate([lin, shift[..., None]], axis=-1)


def invert(a: np.ndarray) -> np.ndarray:
    """Inverse of affine maps (..., 2, 3)."""
    lin = np.linalg.inv(a[..., :2])
    shift = -(lin @ a[..., 2:])[..., 0]
    return np.concatenate([lin, shift[..., None]], axis=-1)


def apply(a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (B, J, 2) by per-row affines (B, 2, 3)."""
    return np.einsum("bij,bkj->bki", a[..., :2], points) + a[:, None, :, 2]


# -- the anchor's crop --------------------------------------------------------------------------
def joint_window(joints: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(B, 3) centre x, y and extent max(h, w) of each person's box of present joints."""
    big = np.where(present[..., None], joints, np.nan)
    lo, hi = np.nanmin(big, axis=1), np.nanmax(big, axis=1)
    centre = (lo + hi) / 2
    extent = np.maximum(np.max(hi - lo, axis=1), 1.0)
    return np.concatenate([centre, extent[:, None]], axis=1).astype(np.float64)


def clipped_box(window: np.ndarray, image_wh: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(B, 4) integer corners x0, y0, x1, y1 of the s*m square, truncated and clipped to the image.

    Pixels x0..x1-1 (and y0..y1-1) are inside; at least one pixel each way.
    """
    half = np.asarray(scale, np.float64) * window[:, 2] / 2
    wh = image_wh.astype(np.float64)
    x0 = np.clip(np.trunc(window[:, 0] - half), 0, wh[:, 0] - 1)
    y0 = np.clip(np.trunc(window[:, 1] - half), 0, wh[:, 1] - 1)
    x1 = np.clip(np.trunc(window[:, 0] + half), x0 + 1, wh[:, 0])
    y1 = np.clip(np.trunc(window[:, 1] + half), y0 + 1, wh[:, 1])
    return np.stack([x0, y0, x1, y1], axis=1)


def letterbox(box: np.ndarray, size: int) -> np.ndarray:
    """(B, 2, 3) image -> crop map: the box scaled uniformly into size x size, padded symmetrically."""
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    f = size / np.maximum(w, h)
    pad_x, pad_y = (size - w * f) / 2, (size - h * f) / 2
    out = np.zeros((len(box), 2, 3))
    out[:, 0, 0] = out[:, 1, 1] = f
    out[:, 0, 2] = (0.5 - box[:, 0]) * f - 0.5 + pad_x
    out[:, 1, 2] = (0.5 - box[:, 1]) * f - 0.5 + pad_y
    return out


def crop_affine(
    window: np.ndarray, image_wh: np.ndarray, scale: np.ndarray | float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image -> crop maps (B, 2, 3), clipped boxes (B, 4)) of the anchor crop at ``scale``."""
    scale = np.broadcast_to(np.asarray(scale, np.float64), (len(window),))
    box = clipped_box(window, image_wh, scale)
    return letterbox(box, size), box


def store_affine(window: np.ndarray, spec: CropSpec) -> np.ndarray:
    """(B, 2, 3) image -> stored map: the unclipped store_scale*m square onto T x T pixels."""
    side = spec.store_scale * window[:, 2]
    a = spec.store_size / side
    out = np.zeros((len(window), 2, 3))
    out[:, 0, 0] = out[:, 1, 1] = a
    out[:, 0, 2] = (spec.store_size - 1) / 2 - window[:, 0] * a
    out[:, 1, 2] = (spec.store_size - 1) / 2 - window[:, 1] * a
    return out


def cut_stored(image: np.ndarray, image_to_stored: np.ndarray, side: int) -> np.ndarray:
    """Resample one photo (H, W, 3) into the stored T x T window (zero outside the photo).

    Shrinking uses area averaging on the needed region first (no aliasing), then a bilinear warp.
    """
    a = image_to_stored.astype(np.float64)
    h, w = image.shape[:2]
    inv = invert(a)
    corners = apply(inv[None], np.array([[[-1, -1], [side, -1], [-1, side], [side, side]]], float))
    x0, y0 = np.clip(np.floor(corners[0].min(0)) - 2, 0, [w, h]).astype(int)
    x1, y1 = np.clip(np.ceil(corners[0].max(0)) + 3, 0, [w, h]).astype(int)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((side, side, 3), np.uint8)
    region = image[y0:y1, x0:x1]
    shift = np.array([[1, 0, -x0], [0, 1, -y0]], float)  # image -> region
    m = compose(a, invert(shift))  # region -> stored
    zoom = abs(a[0, 0])
    if zoom < 0.8:
        rw, rh = max(1, round(region.shape[1] * zoom)), max(1, round(region.shape[0] * zoom))
        kx, ky = rw / region.shape[1], rh / region.shape[0]
        small = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        to_small = np.array([[kx, 0, 0.5 * kx - 0.5], [0, ky, 0.5 * ky - 0.5]])
        region, m = small, compose(m, invert(to_small))
    return cv2.warpAffine(
        np.ascontiguousarray(region),
        m.astype(np.float64),
        (side, side),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
