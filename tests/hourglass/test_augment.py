"""Augmentation: flips relabel left/right (on rendered people), affine keypoints follow the pixels."""

import cv2
import numpy as np
import pytest

from hourglass.augment import AugmentConfig, PoseAugmenter, hflip
from hourglass.datasets.synthetic import SyntheticConfig, render_synthetic
from hourglass.joints import MPII_FLIP_PAIRS
from hourglass.joints import MPII_INDEX as J


@pytest.fixture(scope="module")
def frontal_people():
    """Standing people seen from the front, upright: their right side is on the image's left."""
    cfg = SyntheticConfig(
        size=128,
        family_weights={"standing": 1.0},
        back_view_prob=0.0,
        rotation_deg=0.0,
        occluder_prob=0.0,
        truncation_prob=0.0,
    )
    return render_synthetic(12, seed=3, cfg=cfg, return_parts=True)


def test_frontal_people_have_right_side_on_image_left(frontal_people):
    j = frontal_people.joints
    assert (j[:, J["r_shoulder"], 0] < j[:, J["l_shoulder"], 0]).all()
    assert (j[:, J["r_hip"], 0] < j[:, J["l_hip"], 0]).all()


def test_flip_mirrors_pixels_and_swaps_left_right_on_a_rendered_image(frontal_people):
    for image, joints, vis, parts in zip(
        frontal_people.images,
        frontal_people.joints,
        frontal_people.visibility,
        frontal_people.parts,
        strict=True,
    ):
        f_image, f_joints, f_vis = hflip(image, joints, vis)
        np.testing.assert_array_equal(f_image, image[:, ::-1])
        # The mirrored person still has its (relabelled) right side on the image's left ...
        assert f_joints[J["r_shoulder"], 0] < f_joints[J["l_shoulder"], 0]
        assert f_joints[J["r_hip"], 0] < f_joints[J["l_hip"], 0]
        for a, b in MPII_FLIP_PAIRS:
            assert f_joints[a, 0] == pytest.approx(127 - joints[b, 0])
            assert f_joints[a, 1] == joints[b, 1] and f_vis[a] == vis[b]
        # ... and every visible joint still sits on drawn body pixels of the mirrored image.
        f_parts = parts[:, ::-1]
        xy = np.rint(f_joints[f_vis == 1]).astype(int)
        assert (f_parts[xy[:, 1], xy[:, 0]] >= 0).all()


def test_affine_keypoints_follow_the_image_content():
    points = np.array([[12.0, 20.0], [40.0, 44.0], [30.0, 9.0], [50.0, 30.0]], np.float32)
    aug = PoseAugmenter(AugmentConfig(flip=0.0, shift=0.1, rotate=30, scale_min=0.9, scale_max=1.1))
    checked = 0
    for seed in range(5):
        for k, (x, y) in enumerate(points):  # one dot per image, the same random affine each time
            image = np.zeros((64, 64, 3), np.uint8)
            cv2.circle(image, (int(x), int(y)), 2, (255, 255, 255), -1)
            aug.reseed(seed)
            out, moved, _ = aug(image, points, np.ones(4, np.int8))
            weight = out[..., 0].astype(float)
            if weight.sum() < 5 * 255:
                continue  # this dot left the frame
            ys, xs = np.mgrid[:64, :64]
            cx, cy = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
            assert np.hypot(cx - moved[k, 0], cy - moved[k, 1]) < 0.5
            checked += 1
    assert checked >= 15


def test_augmentation_is_deterministic_by_seed_and_off_when_disabled(frontal_people):
    image, joints, vis = (
        frontal_people.images[0],
        frontal_people.joints[0],
        frontal_people.visibility[0],
    )
    aug = PoseAugmenter(AugmentConfig())
    aug.reseed(11)
    first = [aug(image, joints, vis) for _ in range(4)]
    aug.reseed(11)
    second = [aug(image, joints, vis) for _ in range(4)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not all(np.array_equal(first[0][0], f[0]) for f in first[1:])
    off = PoseAugmenter(AugmentConfig(enabled=False))
    assert off(image, joints, vis)[0] is image
