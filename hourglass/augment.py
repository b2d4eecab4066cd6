"""Train-time augmentation: horizontal flip with left/right swap, then affine jitter.

Paper values (docs/anchor.md 2.4): flip p 0.5; shift +-0.2 of the side per axis, zoom 0.75-1.25,
rotation +-45 degrees, constant-0 border, always applied. Evaluation uses no augmentation.
Keypoints follow the pixel-centre convention (x' = W - 1 - x under a flip), as albumentations does.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from hourglass.joints import flip_permutation


@dataclass
class AugmentConfig:
    """Augmentation knobs (``train.augment.*`` in the config)."""

    enabled: bool = True
    flip: float = 0.5
    shift: float = 0.2
    scale_min: float = 0.75
    scale_max: float = 1.25
    rotate: float = 45.0
    # "auto" (default): "batch" on CUDA, "sample" on the CPU; "sample": albumentations image by
    # image on the CPU (the anchor's way; reproduces earlier CPU results); "batch": whole batches
    # warped on the model's device (augment_batch.py).
    path: str = "auto"


def hflip(image: np.ndarray, joints: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mirror one crop and relabel its joints (left <-> right). joints (J, 2), visibility (J,)."""
    perm = flip_permutation(joints.shape[0])
    width = image.shape[1]
    flipped = joints[perm].copy()
    flipped[:, 0] = (width - 1) - flipped[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flipped, visibility[perm].copy()


def albumentations_affine(
    shift: tuple[float, float] | dict[str, tuple[float, float]],
    scale: tuple[float, float],
    rotate: tuple[float, float],
) -> A.Compose:
    """The per-sample affine: shift (fraction of the side; one range for both axes or per axis
    ``{"x": .., "y": ..}``), zoom and rotation (degrees) ranges, bilinear, constant-0 border,
    keypoints kept when they leave the frame."""
    return A.Compose(
        [
            A.Affine(
                translate_percent=shift,
                scale=scale,
                rotate=rotate,
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=1.0,
            )
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
        seed=0,
    )


class PoseAugmenter:
    """Applies :class:`AugmentConfig` to one (image, joints, visibility) at a time.

    Randomness comes from :meth:`reseed` (one integer per epoch), so a run is deterministic by seed.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(0)
        self.affine = albumentations_affine(
            (-cfg.shift, cfg.shift), (cfg.scale_min, cfg.scale_max), (-cfg.rotate, cfg.rotate)
        )

    def reseed(self, seed: int) -> None:
        """Restart both random streams (flip and affine) from ``seed``."""
        self.rng = np.random.default_rng(seed)
        self.affine.set_random_seed(seed)

    def __call__(
        self, image: np.ndarray, joints: np.ndarray, visibility: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the augmented (image (S,S,3) uint8, joints (J,2) float32, visibility (J,))."""
        if not self.cfg.enabled:
            return image, joints, visibility
        if self.rng.random() < self.cfg.flip:
            image, joints, visibility = hflip(image, joints, visibility)
        out = self.affine(image=image, keypoints=joints.astype(np.float32))
        return out["image"], np.asarray(out["keypoints"], dtype=np.float32), visibility


def sample_jitter(
    rng: np.random.Generator, cfg: AugmentConfig, n: int, size: int, whole_pixels: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-crop (flip, then affine jitter) maps (n, 2, 3) on a size x size crop, and the flips (n,).

    The same distributions as :class:`PoseAugmenter` (flip p, shift of the side per axis, zoom,
    rotation about the crop centre), drawn vectorised; used for crops cut from stored windows and
    by the batch path (``augment_batch.py``). ``whole_pixels`` truncates the shift to whole pixels
    as albumentations' ``Affine`` does (``int(percent * side)``).
    """
    flips = rng.random(n) < cfg.flip
    shift = rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * size
    zoom = rng.uniform(cfg.scale_min, cfg.scale_max, n)
    theta = np.deg2rad(rng.uniform(-cfg.rotate, cfg.rotate, n))
    if whole_pixels:
        shift = np.trunc(shift)
    return jitter_maps(flips, shift, zoom, theta, size), flips


def jitter_maps(
    flips: np.ndarray, shift: np.ndarray, zoom: np.ndarray, theta: np.ndarray, size: int
) -> np.ndarray:
    """Input -> output pixel maps (n, 2, 3): flip about the centre, zoom and rotate by ``theta``
    (radians, image axes: y down) about the centre, then shift (n, 2) pixels.

    albumentations' ``Affine(rotate=r)`` is ``theta = -radians(r)`` here (same centre (S-1)/2).
    """
    n = len(flips)
    centre = (size - 1) / 2
    sign = np.where(flips, -1.0, 1.0)  # the flip x' = size - 1 - x, composed first
    cos, sin = np.cos(theta) * zoom, np.sin(theta) * zoom
    out = np.zeros((n, 2, 3))
    out[:, 0, 0], out[:, 0, 1] = cos * sign, -sin
    out[:, 1, 0], out[:, 1, 1] = sin * sign, cos
    # x_c = sign*(x - centre) (flip about the centre); result = R x_c + centre + shift
    out[:, 0, 2] = -(cos * sign) * centre + sin * centre + centre + shift[:, 0]
    out[:, 1, 2] = -(sin * sign) * centre - cos * centre + centre + shift[:, 1]
    return out
