"""Batch augmentation on the model's device (``train.augment.path=batch``).

The per-sample path (``augment.PoseAugmenter``: albumentations, one crop at a time on the CPU)
stays the default. This path draws the same distributions (flip p, shift, zoom, rotation; shifts in
whole pixels as albumentations draws them) for a whole batch at once (``augment.sample_jitter``)
and warps every crop with one bilinear ``grid_sample`` on the device (``views.sample_affine``, the
maths real caches use). Caches stored with a margin (real photos) take their usual cut
(``views.cut_plan``, the same random draws as the per-sample path), warped on the device too.
The result goes straight to the model: float (B, 3, S, S) channels-last, ``uint8 / 256`` values.
"""

from __future__ import annotations

import numpy as np
import torch

from hourglass.augment import AugmentConfig, sample_jitter
from hourglass.datasets import crops
from hourglass.datasets.cache import PoseCache
from hourglass.datasets.views import cut_plan, sample_affine, target_joints, warp_windows
from hourglass.errors import AlposeError
from hourglass.joints import flip_permutation

AUGMENT_PATHS = ("sample", "batch")

# A no-margin cache is copied to the accelerator once when it is at most this big.
DEVICE_COPY_LIMIT = 4 * 1024**3


def check_path(path: str) -> str:
    """``train.augment.path`` checked: ``sample`` or ``batch``."""
    if path not in AUGMENT_PATHS:
        raise AlposeError(f"train.augment.path={path!r}: use one of {', '.join(AUGMENT_PATHS)}")
    return path


class BatchAugmenter:
    """Random flip + affine jitter for whole batches; seeded per epoch like ``PoseAugmenter``."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Input -> output maps (n, 2, 3) (flip composed first) and the flips (n,) bool."""
        return sample_jitter(self.rng, self.cfg, n, size, whole_pixels=True)


def warp_crops(
    images: torch.Tensor, joints: np.ndarray, vis: np.ndarray, maps: np.ndarray, flips: np.ndarray
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Apply per-crop maps to uint8 crops (B, S, S, 3) on any device, relabelling flipped joints.

    Returns (images float (B, 3, S, S), whole values 0..255, on images' device; joints (B, J, 2)
    float32; visibility (B, J)). The output pixel p samples the input at maps^-1(p), bilinear,
    zero outside (``border_mode=constant 0`` of the per-sample path).
    """
    size = images.shape[1]
    x = images.permute(0, 3, 1, 2).float()
    out = sample_affine(x, crops.invert(maps), size).round_().clamp_(0, 255)
    joints, vis = np.array(joints, np.float64), np.array(vis, copy=True)
    if flips.any():
        perm = flip_permutation(vis.shape[1])
        joints[flips] = joints[flips][:, perm]
        vis[flips] = vis[flips][:, perm]
    return out, crops.apply(maps, joints).astype(np.float32), vis


def device_images(data: PoseCache, device: torch.device) -> torch.Tensor | None:
    """The whole no-margin image array as a uint8 tensor on ``device`` (memoised), or None when it
    is not an in-memory array or too big to copy; on the CPU it shares the array's memory."""
    if not isinstance(data.images, np.ndarray):
        return None
    if device.type == "cpu":
        return torch.from_numpy(data.images)
    if data.images.nbytes > DEVICE_COPY_LIMIT:
        return None
    key = f"_device_images_{device}"
    if key not in data.__dict__:
        data.__dict__[key] = torch.from_numpy(data.images).to(device)
    return data.__dict__[key]


def device_batch(
    data: PoseCache, idx: np.ndarray, augmenter: BatchAugmenter | None, device: torch.device
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(model input float (B, 3, S, S) channels-last on ``device``, joints (B, J, 2), vis (B, J)).

    Joints carry the head-top pull like ``views.model_batch``; no augmenter = the evaluation crop.
    """
    idx = np.asarray(idx, dtype=np.int64)
    augment = augmenter is not None and augmenter.cfg.enabled
    if data.has_margin:
        to_out, box, joints, vis = cut_plan(data, idx, augmenter if augment else None)
        stored = torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device)
        x = warp_windows(stored, data.stored_to_image[idx], to_out, box, data.image_size)
    else:
        resident = device_images(data, device)
        if resident is not None:
            images = resident[torch.from_numpy(idx).to(resident.device)]
        else:
            images = torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device)
        joints, vis = data.joints[idx], data.visibility[idx]
        if augment:
            maps, flips = augmenter.draw(len(idx), data.image_size)
            x, joints, vis = warp_crops(images, joints, vis, maps, flips)
        else:
            x = images.permute(0, 3, 1, 2).float()
    x = x.div_(256.0).contiguous(memory_format=torch.channels_last)
    return x, target_joints(data, joints, vis), vis
