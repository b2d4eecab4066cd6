"""Gaussian targets and decoding: sub-pixel round trips and the documented decoder conventions."""

import math

import pytest
import torch

from hourglass.heatmaps import (
    decode,
    flip_heatmaps,
    gaussian_targets,
    heatmap_to_image,
    image_to_heatmap,
)
from hourglass.joints import flip_permutation


@pytest.mark.parametrize(("size", "sigma"), [(64, 1.75), (16, 1.0), (32, 2.0)])
def test_encode_decode_round_trip_is_sub_pixel_exact(size, sigma):
    torch.manual_seed(0)
    mu = torch.rand(32, 16, 2) * (size - 8) + 4  # sub-pixel positions away from the border
    targets, has = gaussian_targets(mu, torch.ones(32, 16, dtype=torch.bool), size, sigma, 30.0)
    assert has.all()
    xy, peak = decode(targets, "parabola")
    assert (xy - mu).abs().max() < 0.1
    assert peak.max() <= 30.0 and peak.min() > 30.0 * math.exp(-0.5 / sigma**2)


def test_target_window_and_peak_follow_the_anchor():
    mu = torch.tensor([[[10.3, 20.6]]])
    t, has = gaussian_targets(mu, torch.ones(1, 1, dtype=torch.bool), 64, 1.75, 30.0)
    nonzero = (t[0, 0] > 0).nonzero()
    # ceil(6 * 1.75) = 11 -> an 11x11 window centred on round(mu) = (10, 21).
    assert nonzero[:, 1].min() == 5 and nonzero[:, 1].max() == 15
    assert nonzero[:, 0].min() == 16 and nonzero[:, 0].max() == 26
    expected = 30 * math.exp(-((10 - 10.3) ** 2 + (21 - 20.6) ** 2) / (2 * 1.75**2))
    assert t[0, 0, 21, 10].item() == pytest.approx(expected, rel=1e-5)


def test_joint_whose_window_misses_the_map_gets_no_target():
    mu = torch.tensor([[[-7.0, 30.0], [-4.0, 30.0], [30.0, 30.0]]])
    present = torch.tensor([[True, True, False]])
    t, has = gaussian_targets(mu, present, 64, 1.75, 30.0)
    assert has.tolist() == [[False, True, False]]  # -4: window reaches column 1; absent: none
    assert t[0, 0].abs().sum() == 0 and t[0, 1].sum() > 0 and t[0, 2].abs().sum() == 0


def test_paper_decoder_is_the_local_weighted_mean():
    h = torch.zeros(1, 1, 8, 8)
    h[0, 0, 3, 3], h[0, 0, 3, 4], h[0, 0, 4, 3] = 4.0, 2.0, -5.0  # negatives are clamped to 0
    xy, _ = decode(h, "paper")
    assert xy[0, 0].tolist() == pytest.approx([(3 * 4 + 4 * 2) / 6, 3.0])


def test_quarter_decoder_steps_toward_the_higher_neighbour():
    h = torch.zeros(1, 1, 8, 8)
    h[0, 0, 5, 2], h[0, 0, 5, 1], h[0, 0, 6, 2] = 3.0, 1.0, 2.0
    xy, _ = decode(h, "quarter")
    assert xy[0, 0].tolist() == pytest.approx([1.75, 5.25])


def test_image_heatmap_mapping_is_align_corners():
    xy = torch.tensor([[0.0, 255.0]])
    assert image_to_heatmap(xy, 256, 64).tolist() == [[0.0, 63.0]]
    back = heatmap_to_image(image_to_heatmap(xy, 256, 64), 256, 64)
    assert back[0].tolist() == pytest.approx([0.0, 255.0])


def test_flipped_heatmaps_decode_to_mirrored_swapped_joints():
    torch.manual_seed(1)
    mu = torch.rand(4, 16, 2) * 50 + 6
    t, _ = gaussian_targets(mu, torch.ones(4, 16, dtype=torch.bool), 64)
    perm = flip_permutation(16)
    xy, _ = decode(flip_heatmaps(t, perm), "parabola")
    expected = mu[:, perm].clone()
    expected[..., 0] = 63 - expected[..., 0]
    assert (xy - expected).abs().max() < 0.1
    assert torch.equal(flip_heatmaps(flip_heatmaps(t, perm), perm), t)
