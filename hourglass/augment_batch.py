"""Batch augmentation on the model's device (``train.augment.path``), and the staging of batches.

``train.augment.path``: ``auto`` (the default) is ``batch`` on CUDA and ``sample`` on the CPU, so
CPU results are those of the per-sample path; ``sample`` is ``augment.PoseAugmenter``
(albumentations, one crop at a time on the CPU); ``batch`` draws the same distributions (flip p,
shift, zoom, rotation; shifts in whole pixels as albumentations draws them) for a whole batch at
once (``augment.sample_jitter``) and warps every crop with one bilinear ``grid_sample`` on the
device (``views.sample_affine``, the maths real caches use). Caches stored with a margin (real
photos) take their usual cut (``views.cut_plan``, the same random draws as the per-sample path),
warped on the device too.

A batch is made in two parts: :func:`stage_batch` does the host work (index gather, cache read,
random draws, maps) and queues the copies to the device (pinned, non-blocking on CUDA), so it can
run ahead in the feeder's thread (``feeder.Prefetcher``); :func:`finish_batch` does the device
work in the training thread. The result: float (B, 3, S, S) channels-last, ``uint8 / 256`` values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hourglass.augment import AugmentConfig, PoseAugmenter, sample_jitter
from hourglass.datasets import crops
from hourglass.datasets.cache import PoseCache
from hourglass.datasets.views import (
    cut_plan,
    input_tensor,
    model_batch,
    sample_affine,
    target_joints,
    warp_mapped,
    window_maps,
)
from hourglass.errors import AlposeError
from hourglass.feeder import to_device
from hourglass.joints import flip_permutation

AUGMENT_PATHS = ("auto", "sample", "batch")

# A no-margin cache is copied to the accelerator once when it is at most this big.
DEVICE_COPY_LIMIT = 4 * 1024**3


def check_path(path: str) -> str:
    """``train.augment.path`` checked: ``auto``, ``sample`` or ``batch``."""
    if path not in AUGMENT_PATHS:
        raise AlposeError(f"train.augment.path={path!r}: use one of {', '.join(AUGMENT_PATHS)}")
    return path


def resolve_path(path: str, device: torch.device) -> str:
    """The augmentation path a fit on ``device`` takes: ``auto`` = ``batch`` on CUDA, else
    ``sample``; ``sample`` and ``batch`` as given."""
    if check_path(path) == "auto":
        return "batch" if device.type == "cuda" else "sample"
    return path


def make_augmenter(cfg: AugmentConfig, device: torch.device) -> PoseAugmenter | BatchAugmenter:
    """The augmenter of ``cfg.path`` (resolved for ``device``)."""
    if resolve_path(cfg.path, device) == "batch":
        return BatchAugmenter(cfg)
    return PoseAugmenter(cfg)


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


@dataclass
class Staged:
    """A batch whose host work is done, with its arrays on (or being copied to) the device.

    kind: ``crops`` (pixels are the model crops (B, S, S, 3)), ``jitter`` (crops still to be
    warped by ``maps[0]``, output -> input (B, 2, 3)) or ``windows`` (stored windows (B, T, T, 3)
    and their ``views.window_maps``); pixels uint8. joints (B, J, 2) float32 and present (B, J)
    bool (the joints that get a target) and visible (B, J) bool (flag 1) on the device;
    host_joints and vis on the host; size: S.
    """

    kind: str
    size: int
    pixels: Tensor
    maps: tuple[Tensor, ...]
    joints: Tensor
    present: Tensor
    host_joints: np.ndarray
    vis: np.ndarray
    visible: Tensor


def relabel(
    joints: np.ndarray, vis: np.ndarray, maps: np.ndarray, flips: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Joints (B, J, 2) float32 under per-crop maps and visibility (B, J), flipped ones relabelled."""
    joints, vis = np.array(joints, np.float64), np.array(vis, copy=True)
    if flips.any():
        perm = flip_permutation(vis.shape[1])
        joints[flips] = joints[flips][:, perm]
        vis[flips] = vis[flips][:, perm]
    return crops.apply(maps, joints).astype(np.float32), vis


def _jitter(images: Tensor, out_to_src: np.ndarray | Tensor) -> Tensor:
    """Crops (B, S, S, 3) uint8 warped by output -> input maps: float (B, 3, S, S), whole values."""
    x = images.permute(0, 3, 1, 2).float()
    return sample_affine(x, out_to_src, images.shape[1]).round_().clamp_(0, 255)


def warp_crops(
    images: torch.Tensor, joints: np.ndarray, vis: np.ndarray, maps: np.ndarray, flips: np.ndarray
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Apply per-crop maps to uint8 crops (B, S, S, 3) on any device, relabelling flipped joints.

    Returns (images float (B, 3, S, S), whole values 0..255, on images' device; joints (B, J, 2)
    float32; visibility (B, J)). The output pixel p samples the input at maps^-1(p), bilinear,
    zero outside (``border_mode=constant 0`` of the per-sample path).
    """
    return (_jitter(images, crops.invert(maps)), *relabel(joints, vis, maps, flips))


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


def _gather(data: PoseCache, idx: np.ndarray, device: torch.device) -> Tensor:
    """Crops (B, S, S, 3) uint8 of a no-margin cache on ``device`` (from its device copy if any)."""
    resident = device_images(data, device)
    if resident is not None:
        return resident[to_device(idx, resident.device)]
    return to_device(data.images[idx], device)


def stage_batch(
    data: PoseCache,
    idx: np.ndarray,
    augmenter: PoseAugmenter | BatchAugmenter | None,
    device: torch.device,
) -> Staged:
    """The host work of a batch (random draws from ``augmenter`` in call order) and its copies to
    ``device``. ``PoseAugmenter`` or None: ``views.model_batch`` (None = the evaluation crop);
    ``BatchAugmenter``: the draws and maps of the device warp. Joints carry the head-top pull."""
    idx = np.asarray(idx, dtype=np.int64)
    if not isinstance(augmenter, BatchAugmenter):
        images, joints, vis = model_batch(data, idx, augmenter)
        pixels = to_device(images, device)
        return _staged("crops", data.image_size, pixels, (), joints, vis, device)
    augment = augmenter.cfg.enabled
    if data.has_margin:
        to_out, box, joints, vis = cut_plan(data, idx, augmenter if augment else None)
        pixels = to_device(data.images[idx], device)
        maps = window_maps(data.stored_to_image[idx], to_out, box)
        kind = "windows"
    else:
        pixels, maps, kind = _gather(data, idx, device), (), "crops"
        joints, vis = data.joints[idx], data.visibility[idx]
        if augment:
            forward, flips = augmenter.draw(len(idx), data.image_size)
            joints, vis = relabel(joints, vis, forward, flips)
            maps, kind = (torch.from_numpy(crops.invert(forward)).float(),), "jitter"
    maps = tuple(to_device(m, device) for m in maps)
    joints = target_joints(data, joints, vis)
    return _staged(kind, data.image_size, pixels, maps, joints, vis, device)


def _staged(
    kind: str,
    size: int,
    pixels: Tensor,
    maps: tuple[Tensor, ...],
    joints: np.ndarray,
    vis: np.ndarray,
    device: torch.device,
) -> Staged:
    """A :class:`Staged` with the target joints and their presence copied to ``device``."""
    joints_t = to_device(torch.from_numpy(np.ascontiguousarray(joints)).float(), device)
    present = to_device(np.ascontiguousarray(vis >= 0), device)
    visible = to_device(np.ascontiguousarray(vis == 1), device)
    return Staged(kind, size, pixels, maps, joints_t, present, joints, vis, visible)


def finish_batch(staged: Staged) -> Tensor:
    """The device work of a staged batch: the model input float (B, 3, S, S) channels-last."""
    if staged.kind == "windows":
        x = warp_mapped(staged.pixels, staged.maps, staged.size)  # type: ignore[arg-type]
        return x.div_(256.0).contiguous(memory_format=torch.channels_last)
    if staged.kind == "jitter":
        x = _jitter(staged.pixels, staged.maps[0])
        return x.div_(256.0).contiguous(memory_format=torch.channels_last)
    return input_tensor(staged.pixels)


def device_batch(
    data: PoseCache, idx: np.ndarray, augmenter: BatchAugmenter | None, device: torch.device
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(model input float (B, 3, S, S) channels-last on ``device``, joints (B, J, 2), vis (B, J)).

    Joints carry the head-top pull like ``views.model_batch``; no augmenter = the evaluation crop.
    """
    staged = stage_batch(data, idx, augmenter, device)
    return finish_batch(staged), staged.host_joints, staged.vis
