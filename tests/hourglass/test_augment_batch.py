"""The batch augmentation path: the same crop as the per-sample path for the same transform, the
same distributions, real caches cut exactly as before, and fit runs and is deterministic with it."""

import numpy as np
import pytest
import torch
from helpers.real_fixtures import fixture_cache
from helpers.training import tiny_fit

from hourglass.augment import AugmentConfig, PoseAugmenter, albumentations_affine, jitter_maps
from hourglass.augment_batch import BatchAugmenter, device_batch, warp_crops
from hourglass.datasets.cache import load_cache
from hourglass.datasets.views import model_batch
from hourglass.errors import AlposeError
from hourglass.heatmaps import gaussian_targets, image_to_heatmap
from hourglass.train import TrainConfig

# (flip, shift x, shift y (fraction of the side), zoom, rotation in degrees as albumentations)
CASES = [
    (False, 0.0, 0.0, 1.0, 0.0),
    (True, 0.0, 0.0, 1.0, 0.0),
    (False, 0.1, -0.15, 1.2, 30.0),
    (True, -0.2, 0.05, 0.8, -40.0),
    (True, 0.13, 0.17, 0.9, 12.5),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def per_sample(image, joints, vis, case):
    """The albumentations path with its ranges pinned to one transform."""
    flip, tx, ty, zoom, rot = case
    aug = PoseAugmenter(AugmentConfig(flip=1.0 if flip else 0.0))
    aug.affine = albumentations_affine({"x": (tx, tx), "y": (ty, ty)}, (zoom, zoom), (rot, rot))
    return aug(image, joints, vis)


def targets(joints, vis):
    xy = image_to_heatmap(torch.as_tensor(joints, dtype=torch.float32), 64, 16)
    return gaussian_targets(xy, torch.as_tensor(vis >= 0), 16, 1.0, 1.0)


def test_batch_path_gives_the_per_sample_crop_for_the_same_transform(tiny_cache):
    rows = np.arange(len(CASES)) * 7
    images, joints, vis = (
        tiny_cache.images[rows],
        tiny_cache.joints[rows],
        tiny_cache.visibility[rows],
    )
    size = images.shape[1]
    flips = np.array([c[0] for c in CASES])
    # albumentations' convention: shift int(percent * side), rotation clockwise-positive on screen
    shift = np.trunc(np.array([[c[1], c[2]] for c in CASES]) * size)
    zoom = np.array([c[3] for c in CASES])
    theta = -np.deg2rad([c[4] for c in CASES])
    maps = jitter_maps(flips, shift, zoom, theta, size)
    out, b_joints, b_vis = warp_crops(torch.from_numpy(images), joints, vis, maps, flips)
    b_images = out.permute(0, 2, 3, 1).numpy()
    for i, case in enumerate(CASES):
        s_image, s_joints, s_vis = per_sample(images[i], joints[i], vis[i], case)
        diff = np.abs(b_images[i] - s_image.astype(np.float32))
        assert diff.mean() < 1.0, (case, diff.mean())  # cv2's 1/32-pixel fixed point vs float
        assert np.quantile(diff, 0.99) <= 24, case
        np.testing.assert_allclose(b_joints[i], s_joints, atol=0.05)
        np.testing.assert_array_equal(b_vis[i], s_vis)
    # Without a flip and a transform the batch path is the identity, bit for bit.
    np.testing.assert_array_equal(b_images[0], images[0])
    t_b, has_b = targets(b_joints, b_vis)
    s = [per_sample(images[i], joints[i], vis[i], c) for i, c in enumerate(CASES)]
    t_s, has_s = targets(np.stack([x[1] for x in s]), np.stack([x[2] for x in s]))
    assert torch.equal(has_b, has_s)
    torch.testing.assert_close(t_b, t_s, atol=0.02, rtol=0)


def test_batch_draws_follow_the_configured_distributions():
    cfg = AugmentConfig(flip=0.5, shift=0.2, scale_min=0.75, scale_max=1.25, rotate=45.0)
    aug = BatchAugmenter(cfg)
    aug.reseed(3)
    maps, flips = aug.draw(4000, 64)
    det = np.linalg.det(maps[:, :, :2])
    assert 0.45 < flips.mean() < 0.55
    assert ((det < 0) == flips).all()  # a flip is the only reflection
    zoom = np.sqrt(np.abs(det))
    assert zoom.min() >= 0.75 - 1e-9 and zoom.max() <= 1.25 + 1e-9
    angle = np.degrees(
        np.arctan2(maps[:, 1, 0] * np.where(flips, -1, 1), maps[:, 0, 0] * np.where(flips, -1, 1))
    )
    assert np.abs(angle).max() <= 45 + 1e-6 and np.abs(angle).max() > 40
    centre = np.full(2, 31.5)
    moved = np.einsum("nij,j->ni", maps[:, :, :2], centre) + maps[:, :, 2] - centre
    assert np.allclose(moved, np.round(moved)) and np.abs(moved).max() <= 0.2 * 64  # whole pixels
    aug.reseed(3)
    again, _ = aug.draw(4000, 64)
    np.testing.assert_array_equal(maps, again)


def test_real_caches_cut_the_same_crops_on_the_batch_path(tmp_path):
    data = load_cache(fixture_cache(tmp_path, "mpii", {"train": 6}, size=64))
    cfg = AugmentConfig(rotate=30.0)
    idx = np.array([0, 3, 5, 1])
    sample, batch = PoseAugmenter(cfg), BatchAugmenter(cfg)
    for seed in (1, 2):
        sample.reseed(seed)
        batch.reseed(seed)
        images, joints, vis = model_batch(data, idx, sample)
        x, b_joints, b_vis = device_batch(data, idx, batch, torch.device("cpu"))
        assert x.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_array_equal((x * 256).permute(0, 2, 3, 1).numpy(), images)
        np.testing.assert_array_equal(b_joints, joints)
        np.testing.assert_array_equal(b_vis, vis)


def fit_once(data, path: str, seed: int = 0):
    return tiny_fit(data, 24, 8, epochs=1, seed=seed, augment=AugmentConfig(path=path))[
        0
    ].state_dict()


def test_fit_trains_on_the_batch_path_deterministically(tiny_cache):
    a, b = fit_once(tiny_cache, "batch"), fit_once(tiny_cache, "batch")
    s = fit_once(tiny_cache, "sample")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], s[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(AlposeError, match="augment.path"):
        fit_once(tiny_cache, "gpu")


def test_auto_path_is_batch_on_cuda_and_the_sample_path_on_the_cpu(tiny_cache):
    from hourglass.augment_batch import make_augmenter, resolve_path

    assert TrainConfig().augment.path == "auto"
    assert resolve_path("auto", torch.device("cuda", 0)) == "batch"
    assert resolve_path("auto", torch.device("cpu")) == "sample"
    assert [resolve_path(p, torch.device("cuda")) for p in ("sample", "batch")] == [
        "sample",
        "batch",
    ]
    assert isinstance(
        make_augmenter(AugmentConfig(path="auto"), torch.device("cuda")), BatchAugmenter
    )
    auto, sample = fit_once(tiny_cache, "auto"), fit_once(tiny_cache, "sample")
    for k in auto:
        torch.testing.assert_close(auto[k], sample[k], rtol=0, atol=0)
