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

import threading

import numpy as np
import torch
import torch.nn.functional as F

from hourglass.augment import PoseAugmenter, sample_jitter
from hourglass.datasets import crops
from hourglass.datasets.cache import PoseCache
from hourglass.joints import flip_permutation

MPII_UPPER_NECK, MPII_HEAD_TOP = 8, 9


# Evaluation crops are deterministic: the rows asked for are kept once cut, up to this many bytes.
EVAL_MEMO_LIMIT = 1024**3
_MEMO_LOCK = threading.Lock()  # one for every cache (a lock in the cache would not pickle)


class _EvalMemo:
    """Evaluation crops of the rows asked for so far, in a compact array (first come first kept,
    at most ``EVAL_MEMO_LIMIT`` bytes of crops; rows beyond that are cut each time)."""

    def __init__(self, rows: int, size: int) -> None:
        self.slot = np.full(rows, -1, np.int64)  # row -> position in ``images`` (-1: not kept)
        self.images = np.zeros((0, size, size, 3), np.uint8)
        self.count = 0
        self.capacity = EVAL_MEMO_LIMIT // (size * size * 3)

    def add(self, rows: np.ndarray, images: np.ndarray) -> None:
        """Keep the crops of ``rows`` (distinct, not kept yet) while there is room."""
        keep = min(len(rows), self.capacity - self.count)
        if keep <= 0:
            return
        end = self.count + keep
        if end > len(self.images):  # grow by doubling, up to the limit
            grown = np.zeros(
                (min(self.capacity, max(end, 2 * len(self.images))),) + self.images.shape[1:],
                np.uint8,
            )
            grown[: self.count] = self.images[: self.count]
            self.images = grown
        self.images[self.count : end] = images[:keep]
        self.slot[rows[:keep]] = np.arange(self.count, end)
        self.count = end


def _eval_memo(data: PoseCache) -> _EvalMemo:
    memo = data.__dict__.get("_eval_crops")
    if memo is None:
        memo = data.__dict__["_eval_crops"] = _EvalMemo(len(data), data.image_size)
    return memo


def model_images(data: PoseCache, idx: np.ndarray) -> np.ndarray:
    """Evaluation crops (B, S, S, 3) uint8 of rows ``idx`` (no augmentation).

    Crops of margin caches are cut once per row and kept (``EVAL_MEMO_LIMIT`` bytes counted on
    the kept rows only), so a selection set evaluated every epoch is cut in its first epoch.
    Safe to call from several threads.
    """
    if not data.has_margin:
        return data.images[idx]
    idx = np.asarray(idx, dtype=np.int64)
    with _MEMO_LOCK:
        memo = _eval_memo(data)
        todo = np.unique(idx[memo.slot[idx] < 0])
        fresh = _cut(data, todo, None)[0] if len(todo) else None
        if fresh is not None:
            memo.add(todo, fresh)
        slots = memo.slot[idx]
        kept = slots >= 0
        if kept.all():
            return memo.images[slots]
        out = np.empty((len(idx),) + memo.images.shape[1:], np.uint8)
        out[kept] = memo.images[slots[kept]]
        out[~kept] = fresh[np.searchsorted(todo, idx[~kept])]
        return out


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
    (docs/anchor.md 1.1); the visibility flags are kept (the anchor's blend of them is its bug B12).
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


def input_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 crops (B, S, S, 3) on any device -> the model input: float (B, 3, S, S) in [0, 1)
    (``/ 256`` as the anchor), channels-last."""
    x = pixels.permute(0, 3, 1, 2).float().div_(256.0)
    return x.contiguous(memory_format=torch.channels_last)


def _float_maps(maps: np.ndarray | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """Maps or boxes as float32 on ``device`` (numpy float64 rounded once, tensors as given)."""
    t = torch.from_numpy(np.asarray(maps)) if isinstance(maps, np.ndarray) else maps
    return t.float().to(device)


def _mapped(
    maps: np.ndarray | torch.Tensor, size: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y (B, S, S) of every output pixel centre under per-row affine maps (B, 2, 3)."""
    m = _float_maps(maps, device)[:, :, :, None, None]
    u = torch.arange(size, dtype=torch.float32, device=device).view(1, 1, size)
    v = torch.arange(size, dtype=torch.float32, device=device).view(1, size, 1)
    return m[:, 0, 0] * u + m[:, 0, 1] * v + m[:, 0, 2], m[:, 1, 0] * u + m[:, 1, 1] * v + m[
        :, 1, 2
    ]


def sample_affine(
    x: torch.Tensor, out_to_src: np.ndarray | torch.Tensor, size: int
) -> torch.Tensor:
    """Bilinear samples (B, C, size, size) of ``x`` (B, C, T, T) float at ``out_to_src`` of every
    output pixel centre (maps (B, 2, 3), pixel-centre convention), zero outside; on x's device."""
    side = x.shape[-2]
    sx, sy = _mapped(out_to_src, size, x.device)
    grid = torch.stack([sx, sy], -1).mul_(2.0 / (side - 1)).sub_(1.0)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def window_maps(
    stored_to_image: np.ndarray, image_to_out: np.ndarray, box: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The host part of :func:`warp_windows`: output -> image and output -> stored maps
    (B, 2, 3) and the clipped boxes (B, 4), float32 CPU tensors (ready to copy to a device)."""
    out_to_image = crops.invert(image_to_out)
    out_to_stored = crops.compose(crops.invert(stored_to_image.astype(np.float64)), out_to_image)
    return _float_maps(out_to_image, None), _float_maps(out_to_stored, None), _float_maps(box, None)


def warp_mapped(
    stored: torch.Tensor, maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor], size: int
) -> torch.Tensor:
    """Output crops (B, 3, S, S) float, whole values 0..255, from stored uint8 windows
    (B, T, T, 3) and their :func:`window_maps` (on stored's device); zero outside each box."""
    out_to_image, out_to_stored, box = (m.to(stored.device) for m in maps)
    ix, iy = _mapped(out_to_image, size, stored.device)
    b = box[:, :, None, None] - 0.5
    inside = (ix >= b[:, 0]) & (ix <= b[:, 2]) & (iy >= b[:, 1]) & (iy <= b[:, 3])
    y = sample_affine(stored.permute(0, 3, 1, 2).float(), out_to_stored, size)
    return y.mul_(inside[:, None]).round_().clamp_(0, 255)


def warp_windows(
    stored: torch.Tensor, stored_to_image: np.ndarray, image_to_out: np.ndarray, box, size: int
) -> torch.Tensor:
    """Output crops (B, 3, S, S) float, whole values 0..255, from stored uint8 windows
    (B, T, T, 3) on any device; zero outside each clipped box."""
    return warp_mapped(stored, window_maps(stored_to_image, image_to_out, box), size)


def _warp(
    stored: np.ndarray, stored_to_image: np.ndarray, image_to_out: np.ndarray, box, size: int
) -> np.ndarray:
    """Sample (B, S, S, 3) uint8 output crops; zero outside each clipped box."""
    x = torch.from_numpy(np.ascontiguousarray(stored))
    y = warp_windows(x, stored_to_image, image_to_out, box, size).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()
