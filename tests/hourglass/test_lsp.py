"""LSP / LSPET readers on the real joints.mat files, with generated photos standing in."""

import shutil

import numpy as np
import pytest
import scipy.io
from helpers.real_fixtures import write_photo

from hourglass.datasets import lsp
from hourglass.datasets.cache import SPLIT_NAMES
from hourglass.errors import AlposeError
from hourglass.joints import LSP_TO_MPII


@pytest.fixture
def lsp_mat(refdata):
    return refdata / "farrajota-human-pose-benchmark" / "LSP-joints-PC.mat"


@pytest.fixture
def lspet_mat(refdata):
    return refdata / "realimages" / "axelcarlier-lsp" / "joints.mat"


def test_lsp_flag_is_inverted_and_coordinates_become_zero_based(lsp_mat):
    joints, vis = lsp.read_lsp_joints(lsp_mat)
    raw = scipy.io.loadmat(lsp_mat)["joints"]
    assert joints.shape == (2000, 14, 2) and set(np.unique(vis)) <= {0, 1}
    assert (vis[1000:] == 0).sum() == 1054  # occluded joints of the test half (refdata README)
    np.testing.assert_array_equal(vis, 1 - raw[2].T)
    np.testing.assert_allclose(joints[7, 3], raw[:2, 3, 7] - 1)


def test_lspet_unannotated_joints_are_absent(lspet_mat):
    joints, vis = lsp.read_lspet_joints(lspet_mat)
    assert joints.shape == (10000, 14, 2)
    assert (vis[:2000] < 0).sum() == 3361 and (vis[:2000] == 1).sum() == 24639
    assert (joints[vis < 0] == 0).all()  # garbage coordinates dropped
    per_joint = (vis[:2000] < 0).sum(0).tolist()
    assert per_joint == [228, 166, 329, 336, 181, 224, 213, 217, 252, 273, 243, 240, 374, 85]


def test_torso_falls_back_and_mpii_order_synthesises_pelvis_and_thorax():
    joints = np.zeros((2, 14, 2))
    joints[:, 9], joints[:, 2], joints[:, 8], joints[:, 3] = (0, 0), (3, 4), (10, 0), (10, 6)
    vis = np.ones((2, 14), np.int8)
    vis[1, 9] = -1  # l_shoulder missing -> the other diagonal
    assert lsp.torso(joints, vis).tolist() == [5.0, 6.0]
    vis[1, 8] = -1
    assert np.isnan(lsp.torso(joints, vis)[1])
    m, mv = lsp.to_mpii_order(joints, vis)
    assert m.shape == (2, 16, 2) and (m[:, list(LSP_TO_MPII)] == joints).all()
    np.testing.assert_allclose(m[0, 6], (joints[0, 2] + joints[0, 3]) / 2)  # pelvis
    assert mv[1, 7] == -1 and mv[0, 7] == 1  # thorax needs both shoulders


def _folder(tmp_path, mat, name, count, digits):
    root = tmp_path / name
    (root / "images").mkdir(parents=True)
    shutil.copy(mat, root / "joints.mat")
    for i in range(count):
        write_photo(root / "images" / f"im{i + 1:0{digits}d}.jpg", 24, 24, seed=i)
    return root


def test_anchor_pool_and_test_split(tmp_path, lsp_mat, lspet_mat):
    root = _folder(tmp_path, lsp_mat, "lsp", 3, 4)
    et = _folder(tmp_path, lspet_mat, "lspet", 3, 5)
    table = lsp.read_lsp(root, et, lspet_count=300)
    train, test = SPLIT_NAMES.index("train"), SPLIT_NAMES.index("test")
    assert len(table) == 2300 and table.info["train"] == 1300 and table.info["test"] == 1000
    assert (table.split[:1000] == train).all() and (table.split[1000:2000] == test).all()
    assert (table.family[:2000] == 0).all() and (table.family[2000:] == 1).all()
    assert table.image[0].endswith("lsp/images/im0001.jpg")
    assert table.image[2000].endswith("lspet/images/im00001.jpg")
    mini = lsp.read_lsp(None, et, lspet_count=2000, lspet_test=500)
    assert mini.info["train"] == 1500 and mini.info["test"] == 500
    assert mini.image[0] == "images/im00001.jpg"
    wide = lsp.read_lsp(root, None, joint_order="mpii")
    assert wide.joints.shape == (2000, 16, 2) and wide.joint_names[6] == "pelvis"


def test_lsp_cache_from_generated_photos_and_masked_scoring(tmp_path, lspet_mat):
    """LSPET rows 0-59 (real joints) on generated photos: cache, then PCK ignores absent joints."""
    from hourglass.datasets.cache import load_cache
    from hourglass.datasets.crops import CropSpec
    from hourglass.datasets.real_cache import build_real_cache
    from hourglass.evaluate import score

    joints, vis = lsp.read_lspet_joints(lspet_mat)
    root = tmp_path / "et"
    for i in range(60):
        w, h = np.ceil(joints[i][vis[i] > 0].max(0) + 10).astype(int)
        write_photo(root / "images" / f"im{i + 1:05d}.jpg", int(w), int(h), seed=i)
    shutil.copy(lspet_mat, root / "joints.mat")
    table = lsp.read_lsp(None, root, lspet_count=60, lspet_test=20)
    build_real_cache(
        table,
        root,
        tmp_path / "c.h5",
        CropSpec(size=64, store_size=73),
        provenance={},
        workers=1,
        progress=False,
    )
    cache = load_cache(tmp_path / "c.h5")
    test = cache.indices("test")
    assert len(test) == 20 and cache.normaliser_kind == "torso"
    perfect = score(cache, test, cache.joints[test])
    assert perfect["standard"].summary["Total"] == 100.0
    scored = perfect["standard"].scored
    assert (
        scored.sum() < 20 * 14
        and scored.sum()
        == ((cache.visibility[test] >= 0) & np.isfinite(cache.normaliser[test])[:, None]).sum()
    )
    shifted = cache.joints[test] + np.where(cache.visibility[test, :, None] >= 0, 0, 1e4)
    assert score(cache, test, shifted)["standard"].summary["Total"] == 100.0  # absent: ignored


def test_wrong_layouts_are_one_line(tmp_path, lsp_mat):
    with pytest.raises(AlposeError, match="does not exist"):
        lsp.read_lsp(tmp_path / "none")
    (tmp_path / "x").mkdir()
    with pytest.raises(AlposeError, match="wrong LSP layout"):
        lsp.read_lsp(tmp_path / "x")
    root = _folder(tmp_path, lsp_mat, "swapped", 0, 4)
    with pytest.raises(AlposeError, match="must be 14x3xN"):
        lsp.read_lsp(None, root)  # an LSP file where LSPET is expected
