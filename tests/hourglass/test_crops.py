"""Crops stored with margin: joints land where the crop maps say, augmentation cuts the same
pixels as cropping the photo directly, the synthetic path is untouched, real MPII photos."""

import cv2
import numpy as np
import pytest
from helpers.real_fixtures import PALETTE, grid_pose, person_table, write_photo

from hourglass.augment import AugmentConfig, PoseAugmenter
from hourglass.datasets import crops
from hourglass.datasets.cache import PoseCache, load_cache
from hourglass.datasets.crops import CropSpec
from hourglass.datasets.real_cache import build_real_cache
from hourglass.datasets.views import model_batch, model_images
from hourglass.joints import flip_permutation


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three photos with coloured joints: centred, near the left border, near the bottom corner."""
    folder = tmp_path_factory.mktemp("photos")
    centres = [(200, 150), (60, 120), (330, 235)]
    poses, names = [], []
    for i, c in enumerate(centres):
        pose = grid_pose(c)
        write_photo(folder / "images" / f"im{i}.png", 400, 300, pose, seed=i)
        poses.append(pose)
        names.append(f"images/im{i}.png")
    return folder, names, np.stack(poses)


def _build(folder, names, poses, size=96, **kw):
    vis = np.ones(poses.shape[:2], np.int8)
    table = person_table(names, poses, vis, np.zeros(len(names)), "mpii")
    spec = CropSpec(size=size, store_size=round(size * 2 / 1.75))
    path = folder / f"c{size}.h5"
    build_real_cache(table, folder, path, spec, provenance={}, workers=1, progress=False, **kw)
    return load_cache(path)


def _colour_index(image, joints):
    """Nearest palette entry of the pixel at each (rounded) joint position."""
    xy = np.round(joints).astype(int)
    pixels = image[xy[:, 1], xy[:, 0]].astype(float)
    return np.argmin(((pixels[:, None] - PALETTE[None].astype(float)) ** 2).sum(-1), axis=1)


def test_crop_maps_send_every_joint_back_within_half_a_pixel(photos):
    folder, names, poses = photos
    cache = _build(folder, names, poses)
    back = crops.apply(cache.crop_to_image.astype(np.float64), cache.joints.astype(np.float64))
    assert np.abs(back - poses).max() < 0.5
    assert np.abs(back - poses).max() < 0.01  # in fact float32 exact
    assert cache.image_size == 96 and cache.images.shape[1] == round(96 * 2 / 1.75)
    # The normaliser is scaled into crop pixels with the same factor.
    np.testing.assert_allclose(cache.normaliser, 40.0 * cache.crop_to_image[:, 0, 0] ** -1, 1e-5)


def test_evaluation_crop_shows_each_joint_at_its_cached_position(photos):
    folder, names, poses = photos
    cache = _build(folder, names, poses)
    images = model_images(cache, np.arange(3))
    for i in range(3):
        assert (_colour_index(images[i], cache.joints[i]) == np.arange(16)).all()
    # The border person's crop is clipped to the photo and letterboxed: black padding remains.
    assert images[1][:, :3].max() == 0 or images[1][:, -3:].max() == 0


def test_augmented_crops_move_pixels_and_joints_together_with_flip_relabelling(photos):
    folder, names, poses = photos
    cache = _build(folder, names, poses)
    aug = PoseAugmenter(AugmentConfig(flip=0.5, rotate=30, scale_min=0.9, scale_max=1.1))
    perm = np.array(flip_permutation(16))
    flipped_seen = 0
    for seed in range(6):
        aug.reseed(seed)
        rng_copy = np.random.default_rng(seed)
        images, joints, vis = model_batch(cache, np.array([0, 0, 2]), aug)
        rng_copy.uniform(1.5, 2.0, 3)  # the scale draw comes first, then the flips
        flips = rng_copy.random(3) < 0.5
        for b in range(3):
            inside = (joints[b] > 3).all(1) & (joints[b] < 92).all(1)
            expected = perm if flips[b] else np.arange(16)
            got = _colour_index(images[b], np.clip(joints[b], 0, 95))
            assert (got[inside] == expected[inside]).all()
            flipped_seen += int(flips[b])
    assert flipped_seen > 0


def test_stored_margin_covers_every_training_crop(photos):
    """Cutting from the stored window equals cutting the full photo with the same map."""
    folder, names, poses = photos
    cache = _build(folder, names, poses, size=96)
    photo = cv2.cvtColor(cv2.imread(str(folder / names[0])), cv2.COLOR_BGR2RGB)
    window, wh = cache.window[:1].astype(np.float64), cache.image_wh[:1]
    for scale in (1.5, 2.0):
        to_out, box = crops.crop_affine(window, wh, scale, 96)
        theta = np.deg2rad(40)
        rot = np.array([[[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0]]])
        c = 47.5
        rot[0, :, 2] = np.array([c, c]) - rot[0, :, :2] @ np.array([c, c])
        m = crops.compose(rot * np.array([[[0.75, 0.75, 1]]]), to_out)  # zoom out + rotate
        m[0, :, 2] += np.array([c, c]) * 0.25
        from hourglass.datasets.views import _warp

        got = _warp(cache.images[:1], cache.stored_to_image[:1], m, box, 96)[0].astype(float)
        direct = cv2.warpAffine(photo, m[0], (96, 96), flags=cv2.INTER_LINEAR).astype(float)
        inside = got.sum(-1) > 0
        assert inside.mean() > 0.3
        assert np.abs(got - direct)[inside].mean() < 12  # resampling differences only
        # No pixel of the clipped window is lost to a missing margin.
        out_to_img = crops.invert(m)[0]
        u, v = np.meshgrid(np.arange(96), np.arange(96))
        ix = out_to_img[0, 0] * u + out_to_img[0, 1] * v + out_to_img[0, 2]
        iy = out_to_img[1, 0] * u + out_to_img[1, 1] * v + out_to_img[1, 2]
        in_box = (ix > box[0, 0] + 1) & (ix < box[0, 2] - 2) & (iy > box[0, 1] + 1)
        in_box &= iy < box[0, 3] - 2
        assert (got.sum(-1)[in_box] > 0).mean() > 0.99


def test_lazy_and_in_memory_caches_give_the_same_crops(photos, tmp_path):
    folder, names, poses = photos
    _build(folder, names, poses, size=64)
    path = folder / "c64.h5"
    lazy, ram = load_cache(path, in_memory=False), load_cache(path, in_memory=True)
    assert not isinstance(lazy.images, np.ndarray)
    idx = np.array([2, 0, 2])
    np.testing.assert_array_equal(lazy.images[idx], ram.images[idx])
    np.testing.assert_array_equal(model_images(lazy, idx), model_images(ram, idx))


def test_synthetic_caches_take_the_unchanged_path(tiny_cache):
    idx = np.array([5, 1, 9, 3])
    images, joints, vis = model_batch(tiny_cache, idx, None)
    np.testing.assert_array_equal(images, tiny_cache.images[idx])
    np.testing.assert_array_equal(joints, tiny_cache.joints[idx])
    a, b = PoseAugmenter(AugmentConfig()), PoseAugmenter(AugmentConfig())
    a.reseed(3), b.reseed(3)
    images, joints, vis = model_batch(tiny_cache, idx, a)
    old = [b(tiny_cache.images[i], tiny_cache.joints[i], tiny_cache.visibility[i]) for i in idx]
    np.testing.assert_array_equal(images, np.stack([o[0] for o in old]))
    np.testing.assert_array_equal(joints, np.stack([o[1] for o in old]))


def test_head_pull_moves_only_training_targets(tiny_cache):
    data = PoseCache(**{**tiny_cache.__dict__, "target_head_pull": 0.8})
    _, joints, vis = model_batch(data, np.array([0]), None)
    want = 0.8 * tiny_cache.joints[0, 9] + 0.2 * tiny_cache.joints[0, 8]
    if (vis[0, [8, 9]] >= 0).all():
        np.testing.assert_allclose(joints[0, 9], want, atol=1e-5)
    np.testing.assert_array_equal(data.joints, tiny_cache.joints)  # the cache itself is untouched


def test_real_mpii_photos_crop_path(refdata, tmp_path):
    """The 5 real MPII photos (first Newell validation persons) with their RELEASE-layout labels."""
    from hourglass.datasets.mpii import read_mat

    photos = refdata / "realimages" / "open-mmlab-mmpose-4cbb429" / "tests" / "data" / "mpii"
    rects = read_mat(refdata / "bearpaw-pytorch-pose" / "detections.mat")
    names = (refdata / "princeton-vl-pose-hg-demo" / "valid_images.txt").read_text().split()[:5]
    table = person_table(names, rects.joints[:5], rects.visibility[:5], np.ones(5), "mpii")
    table.normaliser = rects.head_diagonal[:5]
    spec = CropSpec(size=128, store_size=146)
    report = build_real_cache(
        table, photos, tmp_path / "m.h5", spec, provenance={}, workers=1, progress=False
    )
    assert report.persons == 5 and not report.bad
    cache = load_cache(tmp_path / "m.h5")
    ann = cache.visibility >= 0
    back = crops.apply(cache.crop_to_image.astype(np.float64), cache.joints.astype(np.float64))
    assert np.abs(back - rects.joints[:5])[ann].max() < 0.5
    assert ((cache.joints[ann] > -1) & (cache.joints[ann] < 128)).all()  # 1.75 x the joint box
    assert (
        cache.image_wh == [[1280, 720], [854, 480], [1280, 720], [1280, 720], [1280, 720]]
    ).all()
    # head size in crop pixels = 0.6 x diagonal x crop scale; valid.h5 says 117.96 px for row 0
    np.testing.assert_allclose(
        0.6 * cache.normaliser[0] * cache.crop_to_image[0, 0, 0], 117.96, 0.001
    )
    images = model_images(cache, np.arange(5))
    assert images.shape == (5, 128, 128, 3) and images.mean() > 20
