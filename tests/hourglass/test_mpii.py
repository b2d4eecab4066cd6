"""MPII reader: a RELEASE-layout .mat written here, Tompson's detections.mat, Newell's valid.h5."""

import numpy as np
import pytest
import scipy.io

from hourglass.datasets import mpii
from hourglass.errors import AlposeError


def _point(j, x, y, vis):
    return {"id": j, "x": float(x), "y": float(y), "is_visible": vis}


def _points(rng, flags=None, missing=()):
    out = []
    for j in range(16):
        if j in missing:
            continue
        vis = np.zeros((0, 0), np.uint8) if j in (8, 9) else (flags or {}).get(j, 1)
        out.append(_point(j, 100 + 10 * j + rng.random(), 200 + 5 * j, vis))
    rec = np.zeros((1, len(out)), dtype=[(k, "O") for k in ("id", "x", "y", "is_visible")])
    for i, p in enumerate(out):
        for k, v in p.items():
            rec[0, i][k] = v
    return rec


def _rects(rows):
    rec = np.zeros((1, len(rows)), dtype=[(k, "O") for k in ("x1", "y1", "x2", "y2", "annopoints")])
    for i, r in enumerate(rows):
        rec[0, i]["x1"], rec[0, i]["y1"], rec[0, i]["x2"], rec[0, i]["y2"] = 11, 21, 41, 61
        rec[0, i]["annopoints"] = (
            np.zeros((0, 0)) if r is None else np.array([[(r,)]], dtype=[("point", "O")])
        )
    return rec


def write_release(path):
    """4 images: train with 2 single persons (one occluded wrist, one missing ankle) and 1 crowd
    person; a test image; a validation image (Newell's 005808361.jpg) with 2 single persons, one
    without annopoints; a train image whose only rect is not in single_person."""
    rng = np.random.default_rng(0)
    images = [
        ("a.jpg", 1, [_points(rng, {10: "0"}), _points(rng, missing=(0,)), _points(rng)], [1, 2]),
        ("test.jpg", 0, [_points(rng)], [1]),
        ("005808361.jpg", 1, [_points(rng), None], [1, 2]),
        ("crowd.jpg", 1, [_points(rng)], []),
    ]
    annolist = np.zeros((1, len(images)), dtype=[("image", "O"), ("annorect", "O")])
    single = np.zeros((len(images), 1), dtype=object)
    for i, (name, _, rects, singles) in enumerate(images):
        annolist[0, i]["image"] = np.array([[(name,)]], dtype=[("name", "O")])
        annolist[0, i]["annorect"] = _rects(rects)
        single[i, 0] = np.array(singles, float).reshape(-1, 1) if singles else np.zeros((0, 0))
    release = np.zeros(
        (1, 1), dtype=[("annolist", "O"), ("img_train", "O"), ("single_person", "O")]
    )
    release[0, 0]["annolist"] = annolist
    release[0, 0]["img_train"] = np.array([[t for _, t, _, _ in images]], np.uint8)
    release[0, 0]["single_person"] = single
    scipy.io.savemat(path, {"RELEASE": release})
    return path


def test_release_layout_is_read_like_the_anchor(tmp_path):
    rects = mpii.read_mat(write_release(tmp_path / "r.mat"))
    # 3 + 1 + 1 + 1 rects with annopoints (the one without is skipped)
    assert len(rects) == 6
    assert rects.image[:3] == ["a.jpg"] * 3 and rects.person.tolist() == [0, 1, 2, 0, 0, 0]
    assert rects.is_train.tolist() == [True, True, True, False, True, True]
    assert rects.single.tolist() == [True, True, False, True, True, False]
    first = rects.visibility[0]
    assert first[10] == 0 and first[8] == first[9] == 1 and first[0] == 1  # "0", empty, 1
    assert rects.visibility[1, 0] == -1  # missing joint
    assert rects.joints[0, 3, 1] == pytest.approx(200 + 15 - 1)  # 1-based -> 0-based
    assert rects.head_diagonal[0] == pytest.approx(np.hypot(30, 40))


def test_paper_and_standard_validation_persons(tmp_path):
    rects = mpii.read_mat(write_release(tmp_path / "r.mat"))
    valid = (["005808361.jpg"], [(2, 0)])
    paper = mpii.select_persons(rects, "paper", all_joints=False, valid=valid)
    # train images only, single persons only: a.jpg p0, p1 and 005808361 p0
    assert paper.info == {
        "rectangles": 6,
        "selected": 3,
        "all_joints": False,
        "protocol": "paper",
        "train": 2,
        "val": 1,
    }
    assert paper.image == ["images/a.jpg", "images/a.jpg", "images/005808361.jpg"]
    strict = mpii.select_persons(rects, "paper", all_joints=True, valid=valid)
    assert strict.info["train"] == 1  # the person missing an ankle is dropped
    standard = mpii.select_persons(rects, "standard", all_joints=False, valid=(["a.jpg"], [(0, 2)]))
    # Newell's exact person (a crowd rect) is validation; nothing else of that image is train
    assert standard.info["val"] == 1 and standard.image == ["images/a.jpg", "images/005808361.jpg"]
    assert standard.split.tolist() == [1, 0]
    with pytest.raises(AlposeError, match="protocol"):
        mpii.select_persons(rects, "other")


def test_detections_mat_annolist_matches_the_published_ground_truth(refdata):
    rects = mpii.read_mat(refdata / "bearpaw-pytorch-pose" / "detections.mat")
    assert len(rects) == 2958
    d = scipy.io.loadmat(refdata / "bearpaw-pytorch-pose" / "detections_our_format.mat")
    gt = d["pos_gt_src"].transpose(2, 0, 1)
    missing = d["jnt_missing"].T.astype(bool)
    assert np.array_equal(rects.visibility < 0, missing)
    exact = ~missing & np.all(gt != 0, -1)  # 13 quirk entries carry a 0 coordinate there
    assert (~missing & ~exact).sum() == 13
    assert np.abs(rects.joints - (gt - 1))[exact].max() < 1e-3
    h5 = mpii.read_h5(refdata / "princeton-vl-pose-hg-demo" / "valid.h5")
    assert np.array_equal(rects.visibility, h5.visibility)  # MPII is_visible kept
    assert (h5.visibility == 0).sum() == 10243  # occluded but annotated (refdata README)
    np.testing.assert_allclose(rects.head_diagonal, h5.head_diagonal, atol=1e-3)
    assert np.abs(rects.joints - h5.joints)[h5.visibility >= 0].max() < 1.0  # valid.h5 floors


def test_newell_resources_are_the_published_split(refdata):
    names, pairs = mpii.newell_validation()
    published = (refdata / "princeton-vl-pose-hg-demo" / "valid_images.txt").read_text().split()
    assert names == published and len(names) == 2958 and len(set(names)) == 2729
    h5 = mpii.read_h5(refdata / "princeton-vl-pose-hg-demo" / "valid.h5")
    assert pairs == list(zip(h5.image_index.tolist(), h5.person.tolist(), strict=True))
    # Newell's h5 as the source: with the standard protocol every valid.h5 row is validation.
    table = mpii.select_persons(
        h5, "standard", all_joints=False, is_newell_valid=np.ones(len(h5), bool)
    )
    assert table.info["val"] == 2958 and table.info["train"] == 0
    assert mpii.select_persons(h5, "paper", all_joints=True).info["val"] < 2958


def test_layout_and_unreadable_mat_errors(tmp_path):
    with pytest.raises(AlposeError, match="does not exist"):
        mpii.read_mpii(tmp_path / "nowhere")
    with pytest.raises(AlposeError, match="wrong MPII layout"):
        mpii.read_mpii(tmp_path)
    (tmp_path / mpii.RELEASE_NAME).write_bytes(b"MATLAB 5.0 garbage" * 10)
    with pytest.raises(AlposeError, match="cannot read the MPII annotation"):
        mpii.read_mpii(tmp_path)
