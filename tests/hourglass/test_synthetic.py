"""The synthetic pose set: determinism, labels that match the pixels, label sanity, previews."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from hourglass.datasets.synthetic import (
    FAMILY_NAMES,
    JOINT_PARTS,
    OCCLUDER,
    Scene,
    Shape,
    SyntheticConfig,
    clip_of,
    render_scene,
    render_split,
    render_synthetic,
    sample_poses,
    sample_scene,
)
from hourglass.errors import AlposeError
from hourglass.joints import MPII_INDEX
from hourglass.preview import LEFT_COLOUR, RIGHT_COLOUR, draw_skeleton, preview_grid, save_png

CFG = SyntheticConfig(size=64)


@pytest.fixture(scope="module")
def poses():
    """Labels of 3000 persons (cheap: nothing is drawn)."""
    return sample_poses(3000, seed=11, cfg=CFG)


@pytest.fixture(scope="module")
def with_parts():
    """120 rendered 128-px persons with part maps, occluders made frequent (at 64 px a joint is
    often within a pixel of some edge, so the centre-pixel agreement is only ~95%)."""
    cfg = replace(CFG, size=128, occluder_prob=0.7)
    return render_synthetic(120, seed=5, cfg=cfg, return_parts=True), cfg


def test_same_seed_and_index_give_identical_bytes():
    a = render_synthetic(6, seed=3, cfg=CFG)
    b = render_synthetic(6, seed=3, cfg=CFG)
    assert a.images.tobytes() == b.images.tobytes()
    tail = render_synthetic(3, seed=3, cfg=CFG, start=3)
    assert tail.images.tobytes() == a.images[3:].tobytes()
    assert np.array_equal(tail.joints, a.joints[3:])
    assert np.array_equal(tail.index, np.arange(3, 6))
    other = render_synthetic(6, seed=4, cfg=CFG)
    assert all(not np.array_equal(other.images[i], a.images[i]) for i in range(6))
    assert not np.array_equal(other.joints, a.joints)


def test_workers_give_identical_bytes():
    one = render_synthetic(8, seed=2, cfg=CFG, workers=1, chunk=3, return_parts=True)
    two = render_synthetic(8, seed=2, cfg=CFG, workers=2, chunk=3, return_parts=True)
    assert one.images.tobytes() == two.images.tobytes()
    assert one.parts.tobytes() == two.parts.tobytes()
    for name in ("joints", "visibility", "head_boxes", "family", "yaw", "index"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name


def test_sample_poses_matches_rendered_labels():
    rendered = render_synthetic(10, seed=8, cfg=CFG, start=100)
    labels = sample_poses(10, seed=8, cfg=CFG, start=100)
    for name in ("joints", "visibility", "head_boxes", "family", "yaw", "index"):
        assert np.array_equal(getattr(rendered, name), getattr(labels, name)), name


def test_shapes_dtypes_and_other_sizes():
    for size in (64, 128, 256):
        s = render_synthetic(2, seed=1, cfg=SyntheticConfig(size=size), return_parts=True)
        assert s.images.shape == (2, size, size, 3) and s.images.dtype == np.uint8
        assert s.parts.shape == (2, size, size) and s.parts.dtype == np.int8
        assert s.joints.shape == (2, 16, 2) and s.joints.dtype == np.float32
        assert s.visibility.dtype == np.int8 and s.head_boxes.dtype == np.float32
        assert s.family.dtype == np.int16 and s.family_names == FAMILY_NAMES
        # The person fills the frame at every size (joints span a good part of the crop).
        span = (s.joints.max(1) - s.joints.min(1)).max(1) / size
        assert np.all(span > 0.4), span
        assert s.images.std() > 10  # not blank


def _neighbourhood(parts: np.ndarray, x: float, y: float) -> np.ndarray:
    """Part ids in the 3x3 pixels around the pixel containing (x, y)."""
    c, r = int(round(x)), int(round(y))
    h, w = parts.shape
    return parts[max(r - 1, 0) : min(r + 2, h), max(c - 1, 0) : min(c + 2, w)].ravel()


def test_visible_joints_sit_on_their_limbs(with_parts):
    s, _ = with_parts
    centre_hits, total = 0, 0
    for i in range(len(s)):
        for j in np.flatnonzero(s.visibility[i] == 1):
            x, y = s.joints[i, j]
            near = _neighbourhood(s.parts[i], x, y)
            assert any(p in JOINT_PARTS[j] for p in near), (i, j, near)
            centre_hits += int(s.parts[i, int(round(y)), int(round(x))] in JOINT_PARTS[j])
            total += 1
    assert centre_hits / total > 0.96, centre_hits / total


def test_occluded_joints_are_covered(with_parts):
    s, _ = with_parts
    covered, total, by_occluder = 0, 0, 0
    for i in range(len(s)):
        for j in np.flatnonzero(s.visibility[i] == 0):
            x, y = s.joints[i, j]
            near = _neighbourhood(s.parts[i], x, y)
            assert any(p not in JOINT_PARTS[j] for p in near), (i, j, near)
            top = s.parts[i, int(round(y)), int(round(x))]
            covered += int(top not in JOINT_PARTS[j])
            by_occluder += int(top == OCCLUDER)
            total += 1
    assert total > 50
    assert covered / total > 0.96, covered / total
    assert by_occluder > 10  # external occluders do hide joints


@pytest.mark.parametrize("supersample", [1, 2, 3])
def test_drawn_pixels_and_labels_share_one_pixel_grid(supersample):
    """A shape drawn through the image path lands where its crop-pixel coordinates say
    (pixel centres on integers), whatever the supersampling."""
    cfg = SyntheticConfig(size=32, supersample=supersample, clutter_min=0, clutter_max=0)
    cfg = replace(cfg, blur_prob=0, noise_sigma_max=0, contrast_min=1, contrast_max=1)
    cfg = replace(cfg, brightness_max=0, texture_prob=0)
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    centre = np.array([12.3, 17.6])
    disc = centre + 5 * np.stack([np.cos(t), np.sin(t)], axis=1)
    blank = dict(joints=np.zeros((16, 2), np.float32), visibility=np.zeros(16, np.int8))
    blank.update(head_box=np.zeros(4, np.float32), family=0, yaw=0.0)
    blank.update(sleeve_short=False, shorts=False)
    empty = render_scene(Scene(shapes=[], **blank), 0, 0, cfg).astype(float)
    shape = Shape(disc, OCCLUDER, 0.0, "occluder")
    drawn = render_scene(Scene(shapes=[shape], **blank), 0, 0, cfg).astype(float)
    # Coverage per pixel: how far each pixel moved from the background toward the shape colour.
    colour = drawn[int(round(centre[1])), int(round(centre[0]))]
    toward = colour - empty
    weight = ((drawn - empty) * toward).sum(2) / np.maximum((toward**2).sum(2), 1e-6)
    weight = np.clip(weight, 0, 1) * ((toward**2).sum(2) > 100)
    assert weight.sum() > 0.8 * np.pi * 25, weight.sum()
    rows, cols = np.mgrid[0:32, 0:32]
    found = np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum()
    assert np.allclose(found, centre, atol=0.1), found


def test_absent_joints_lie_outside_the_crop(poses, with_parts):
    size = CFG.size
    outside = np.any((poses.joints < -0.5) | (poses.joints > size - 0.5), axis=2)
    assert np.array_equal(outside, poses.visibility == -1)
    assert 0.005 < outside.mean() < 0.1  # truncation happens, but rarely
    s, cfg = with_parts
    outside = np.any((s.joints < -0.5) | (s.joints > cfg.size - 0.5), axis=2)
    assert np.array_equal(outside, s.visibility == -1)


def test_visibility_rates_are_plausible(poses):
    vis = poses.visibility
    assert 0.7 < (vis == 1).mean() < 0.95
    assert 0.05 < (vis == 0).mean() < 0.3


def test_head_boxes_contain_head_top_and_upper_neck(poses):
    box = poses.head_boxes
    for name in ("head_top", "upper_neck"):
        p = poses.joints[:, MPII_INDEX[name]]
        inside = (p[:, 0] >= box[:, 0]) & (p[:, 0] <= box[:, 2])
        inside &= (p[:, 1] >= box[:, 1]) & (p[:, 1] <= box[:, 3])
        assert inside.all(), name
    # MPII-like proportions: PCKh head size (0.6 x diagonal) comparable to the head segment.
    head_size = 0.6 * np.hypot(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    segment = np.linalg.norm(poses.joints[:, 9] - poses.joints[:, 8], axis=1)
    ratio = np.median(head_size / segment)
    assert 0.6 < ratio < 1.3, ratio


def test_family_frequencies_follow_weights(poses):
    n = len(poses.family)
    weights = np.array([CFG.family_weights[f] for f in FAMILY_NAMES])
    expected = n * weights / weights.sum()
    observed = np.bincount(poses.family, minlength=len(FAMILY_NAMES))
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 22.46, (chi2, observed, expected)  # chi-square, 6 dof, p = 0.001


def test_family_weights_can_select_one_family():
    cfg = SyntheticConfig(family_weights={"lying": 1.0})
    labels = sample_poses(50, seed=0, cfg=cfg)
    assert set(labels.family.tolist()) == {FAMILY_NAMES.index("lying")}
    with pytest.raises(AlposeError):
        sample_poses(1, seed=0, cfg=SyntheticConfig(family_weights={"dancing": 1.0}))


def test_frontal_standing_people_show_their_right_side_on_the_left(poses):
    j = MPII_INDEX
    standing = poses.family == FAMILY_NAMES.index("standing")
    frontal = standing & (np.cos(np.radians(poses.yaw)) > 0)
    back = standing & (np.cos(np.radians(poses.yaw)) < 0)
    assert frontal.sum() > 500 and back.sum() > 50
    x = poses.joints[..., 0]
    assert np.all(x[frontal, j["r_shoulder"]] < x[frontal, j["l_shoulder"]])
    assert np.all(x[frontal, j["r_hip"]] < x[frontal, j["l_hip"]])
    # Seen from behind, the sides swap (so the yaw label and the geometry agree).
    assert np.all(x[back, j["r_shoulder"]] > x[back, j["l_shoulder"]])


def test_person_extent_follows_config():
    size = CFG.size
    extents = []
    for i in range(200):
        scene = sample_scene(0, i, CFG)
        body = np.concatenate([sh.poly for sh in scene.shapes if sh.part != OCCLUDER])
        extents.append((body.max(0) - body.min(0)).max() / size)
    assert CFG.extent_min - 1e-6 <= min(extents) and max(extents) <= CFG.extent_max + 1e-6


def test_splits_are_disjoint_and_deterministic():
    train = render_split("train", 3, seed=0, cfg=CFG)
    val = render_split("val", 3, seed=0, cfg=CFG)
    assert not any(np.array_equal(t, v) for t in train.images for v in val.images)
    again = render_split("val", 2, seed=0, cfg=CFG, start=1)
    assert again.images.tobytes() == val.images[1:].tobytes()
    with pytest.raises(AlposeError):
        render_split("holdout", 1, seed=0, cfg=CFG)


def test_preview_grid_and_skeleton_colours(tmp_path):
    s = render_synthetic(5, seed=0, cfg=CFG)
    grid = preview_grid(s.images, s.joints, s.visibility, cols=3, scale=2, pad=2)
    assert grid.shape == (2 * (128 + 2) + 2, 3 * (128 + 2) + 2, 3) and grid.dtype == np.uint8
    blank = np.zeros((64, 64, 3), np.uint8)
    vis = np.ones(16, np.int8)
    drawn = draw_skeleton(blank, s.joints[0], vis)
    colours = {tuple(c) for c in drawn.reshape(-1, 3).tolist()}
    assert LEFT_COLOUR in colours and RIGHT_COLOUR in colours
    hidden = draw_skeleton(blank, s.joints[0], np.full(16, -1, np.int8))
    assert hidden.max() == 0  # absent joints are not drawn
    path = save_png(tmp_path / "sub" / "grid.png", grid)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp file left


def test_clips_share_person_and_scene_but_move_and_stay_deterministic():
    cfg = SyntheticConfig(clip_length=4)
    train = render_split("train", 8, 5, cfg)
    assert (train.family[:4] == train.family[0]).all() and (
        train.family[4:] == train.family[4]
    ).all()
    moved = np.abs(train.joints[1:4] - train.joints[0]).max(axis=(1, 2))
    assert (moved > 0.1).all() and (moved < 0.25 * cfg.size).all()  # small per-frame motion
    assert np.abs(train.joints[4] - train.joints[0]).max() > 1.0  # a new clip is a new person
    again = render_split("train", 4, 5, cfg, start=4)
    np.testing.assert_array_equal(again.images, train.images[4:])
    val = render_split("val", 8, 5, cfg)
    independent = render_split("val", 8, 5, SyntheticConfig(clip_length=1))
    np.testing.assert_array_equal(val.images, independent.images)  # evaluation stays clip-free


def _brute_force_clips(longest: int, n: int) -> np.ndarray:
    """Clip ids of a long-tail layout built the slow, obvious way: list every clip's frames."""
    ids, clip = [], 0
    while len(ids) < n:
        size, count = longest, 1
        while True:
            for _ in range(count):
                ids += [clip] * size
                clip += 1
            if size == 1:
                break
            size, count = size // 2, count * 2
    return np.array(ids[:n])


@pytest.mark.parametrize("longest", [1, 2, 8, 12, 256])
def test_long_tail_clip_layout_matches_brute_force_and_halves_by_octave(longest):
    cfg = SyntheticConfig(clip_length=longest, clip_profile="long_tail")
    n = 3 * 2 * longest * max(1, longest.bit_length()) + 7  # a few blocks plus a partial one
    got = np.array([clip_of(i, cfg) for i in range(n)])
    np.testing.assert_array_equal(got, _brute_force_clips(longest, n))
    if longest == 256:
        lengths = np.bincount(got[: 256 * 9])  # one full block: 9 octaves of 256 frames
        sizes, counts = np.unique(lengths, return_counts=True)
        assert sizes.tolist() == [1, 2, 4, 8, 16, 32, 64, 128, 256]
        assert counts.tolist() == [256, 128, 64, 32, 16, 8, 4, 2, 1]
    equal = SyntheticConfig(clip_length=longest)
    assert [clip_of(i, equal) for i in range(50)] == [i // longest for i in range(50)]


def test_long_tail_frames_of_one_clip_share_the_person_and_bad_profile_is_refused():
    cfg = SyntheticConfig(clip_length=4, clip_profile="long_tail")  # clips: 4, 2, 2, 1, 1, 1, 1
    train = render_split("train", 11, 5, cfg)
    same = [[0, 1, 2, 3], [4, 5], [6, 7]]
    for frames in same:
        assert (train.family[frames] == train.family[frames[0]]).all()
        moved = np.abs(train.joints[frames] - train.joints[frames[0]]).max()
        assert 0.1 < moved < 0.25 * cfg.size
    assert np.abs(train.joints[8] - train.joints[7]).max() > 1.0  # single frames: new people
    with pytest.raises(AlposeError, match="unknown clip_profile 'zipf'; known: equal, long_tail"):
        SyntheticConfig(clip_profile="zipf").validate()
