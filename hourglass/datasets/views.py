"""The one place where cached rows become model-input crops, for training and for evaluation.

``model_batch(data, idx, augmenter)`` returns (images uint8 (B,S,S,3), joints (B,J,2), visibility
(B,J)) in model-input pixels. Caches without a margin (the synthetic set) are passed through
unchanged and augmented image by image exactly as before. Caches stored with a margin (real
photos, ``crops.py``) are cut in one vectorised warp per batch: the anchor's crop (scale s, clipped
to the photo, letterboxed; evaluation s = 1.75, training s ~ U(1.5, 2)), then for training the
flip and the affine jitter, all composed into one map and sampled bilinearly from the stored
pixels with ``torch.nn.functional.grid_sample``. As in the anchor, everything outside the clipped
crop window is black.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hourglass.augment import PoseAugmenter, sample_jitter
from hourglass.datasets import crops
from hourglass.datasets.cache import PoseCache
from hourglass.joints import flip_permutation

MPII_UPPER_NECK, MPII_HEAD_TOP = 8, 9


# Evaluation crops are deterministic: keep them once cut while they fit in this many bytes.
EVAL_MEMO_LIMIT = 1024**3


def model_images(data: PoseCache, idx: np.ndarray) -> np.ndarray:
    """Evaluation crops (B, S, S, 3) uint8 of rows ``idx`` (no augmentation)."""
    if not data.has_margin:
        return data.images[idx]
    idx = np.asarray(idx, dtype=np.int64)
    size = data.image_size
    if len(data) * size * size * 3 > EVAL_MEMO_LIMIT:
        return _cut(data, idx, None)[0]
    memo = data.__dict__.get("_eval_memo")
    if memo is None:
        memo = (np.zeros((len(data), size, size, 3), np.uint8), np.zeros(len(data), bool))
        data.__dict__["_eval_memo"] = memo
    images, done = memo
    todo = np.unique(idx[~done[idx]])
    if len(todo):
        images[todo] = _cut(data, todo, None)[0]
        done[todo] = True
    return images[idx]


def model_batch(
    data: PoseCache, idx: np.ndarray, augmenter: PoseAugmenter | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (B,S,S,3) uint8, joints (B,J,2), visibility (B,J)) as the model sees them.

    Joints get the runtime head-top pull when ``data.target_head_pull`` is set (training targets).
    """
    idx = np.asarray(idx, dtype=np.int64)
    augment = augmenter is not None and augmenter.cfg.enabled
    if not data.has_margin:
        images, joints, vis = data.images[idx], data.joints[idx], data.visibility[idx]
        if augment:
            out = [augmenter(images[i], joints[i], vis[i]) for i in range(len(idx))]
            images = np.stack([o[0] for o in out])
            joints, vis = np.stack([o[1] for o in out]), np.stack([o[2] for o in out])
    elif augment:
        images, joints, vis = _cut(data, idx, augmenter)
    else:  # the evaluation crop: the cached joints are already in its frame
        images, joints, vis = model_images(data, idx), data.joints[idx], data.visibility[idx]
    return images, target_joints(data, joints, vis), vis


def target_joints(data: PoseCache, joints: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Joints with the anchor's head-top pull (lambda = ``data.target_head_pull``) where set.

    head_top := lambda * head_top + (1 - lambda) * upper_neck where both are annotated
    (anchor.md 1.1); the visibility flags are kept (the anchor's blend of them is its bug B12).
    """
    lam = float(data.target_head_pull or 0.0)
    if lam <= 0 or lam >= 1 or joints.shape[1] != 16:
        return joints
    joints = np.array(joints, dtype=np.float32, copy=True)
    both = (vis[:, MPII_HEAD_TOP] >= 0) & (vis[:, MPII_UPPER_NECK] >= 0)
    pulled = lam * joints[:, MPII_HEAD_TOP] + (1 - lam) * joints[:, MPII_UPPER_NECK]
    joints[both, MPII_HEAD_TOP] = pulled[both]
    return joints


def cut_plan(
    data: PoseCache, idx: np.ndarray, augmenter: PoseAugmenter | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The maps of a cut out of stored windows (random draws from ``augmenter.rng`` when given):
    image -> model-input maps (B, 2, 3), clipped boxes (B, 4), model-input joints (B, J, 2), vis."""
    size, n = data.image_size, len(idx)
    spec = data.crop or {}
    window, image_wh = data.window[idx].astype(np.float64), data.image_wh[idx]
    joints_img = crops.apply(data.crop_to_image[idx].astype(np.float64), data.joints[idx])
    vis = data.visibility[idx].copy()
    if augmenter is None:
        scale = np.full(n, float(spec.get("eval", crops.PAPER_EVAL_SCALE)))
        to_out, box = crops.crop_affine(window, image_wh, scale, size)
    else:
        lo, hi = spec.get("train", crops.PAPER_TRAIN_SCALE)
        scale = augmenter.rng.uniform(lo, hi, n)
        to_out, box = crops.crop_affine(window, image_wh, scale, size)
        jitter, flips = sample_jitter(augmenter.rng, augmenter.cfg, n, size)
        to_out = crops.compose(jitter, to_out)
        if flips.any():
            perm = flip_permutation(vis.shape[1])
            vis[flips] = vis[flips][:, perm]
            joints_img[flips] = joints_img[flips][:, perm]
    return to_out, box, crops.apply(to_out, joints_img).astype(np.float32), vis


def _cut(
    data: PoseCache, idx: np.ndarray, augmenter: PoseAugmenter | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut model crops (evaluation or augmented training) out of stored windows, batched."""
    to_out, box, joints, vis = cut_plan(data, idx, augmenter)
    images = _warp(data.images[idx], data.stored_to_image[idx], to_out, box, data.image_size)
    return images, joints, vis


def _mapped(
    maps: np.ndarray, size: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y (B, S, S) of every output pixel centre under per-row affine maps (B, 2, 3)."""
    m = torch.from_numpy(maps).float().to(device)[:, :, :, None, None]
    u = torch.arange(size, dtype=torch.float32, device=device).view(1, 1, size)
    v = torch.arange(size, dtype=torch.float32, device=device).view(1, size, 1)
    return m[:, 0, 0] * u + m[:, 0, 1] * v + m[:, 0, 2], m[:, 1, 0] * u + m[:, 1, 1] * v + m[
        :, 1, 2
    ]


def sample_affine(x: torch.Tensor, out_to_src: np.ndarray, size: int) -> torch.Tensor:
    """Bilinear samples (B, C, size, size) of ``x`` (B, C, T, T) float at ``out_to_src`` of every
    output pixel centre (maps (B, 2, 3), pixel-centre convention), zero outside; on x's device."""
    side = x.shape[-2]
    sx, sy = _mapped(out_to_src, size, x.device)
    grid = torch.stack([sx, sy], -1).mul_(2.0 / (side - 1)).sub_(1.0)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def warp_windows(
    stored: torch.Tensor, stored_to_image: np.ndarray, image_to_out: np.ndarray, box, size: int
) -> torch.Tensor:
    """Output crops (B, 3, S, S) float, whole values 0..255, from stored uint8 windows
    (B, T, T, 3) on any device; zero outside each clipped box."""
    out_to_image = crops.invert(image_to_out)
    out_to_stored = crops.compose(crops.invert(stored_to_image.astype(np.float64)), out_to_image)
    ix, iy = _mapped(out_to_image, size, stored.device)
    b = torch.from_numpy(box).float().to(stored.device)[:, :, None, None] - 0.5
    inside = (ix >= b[:, 0]) & (ix <= b[:, 2]) & (iy >= b[:, 1]) & (iy <= b[:, 3])
    y = sample_affine(stored.permute(0, 3, 1, 2).float(), out_to_stored, size)
    return y.mul_(inside[:, None]).round_().clamp_(0, 255)


def _warp(
    stored: np.ndarray, stored_to_image: np.ndarray, image_to_out: np.ndarray, box, size: int
) -> np.ndarray:
    """Sample (B, S, S, 3) uint8 output crops; zero outside each clipped box."""
    x = torch.from_numpy(np.ascontiguousarray(stored))
    y = warp_windows(x, stored_to_image, image_to_out, box, size).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()
