"""The stacked hourglass: paper parameter count, output shapes, the two merge variants."""

import pytest
import torch

from hourglass.model import StackedHourglass, count_parameters


@pytest.mark.parametrize(("joints", "expected"), [(16, 6_570_400), (14, 6_568_860)])
def test_paper_model_parameter_count(joints, expected):
    # anchor.md 3.1: 8,429,088 reported minus 1,858,688 unused skip-conv parameters (MPII).
    assert count_parameters(StackedHourglass(2, 256, 4, joints)) == expected


def test_paper_config_file_builds_the_paper_model():
    from hourglass.config import load_group
    from hourglass.factories import build_model

    model = build_model(load_group("model", "hourglass_paper"), joints=16, image_size=256)
    assert count_parameters(model) == 6_570_400


def test_forward_shapes_embedding_and_pyramid():
    model = StackedHourglass(stacks=2, channels=32, depth=3, joints=16).eval()
    out = model(torch.rand(2, 3, 64, 64))
    assert out.heatmaps.shape == (2, 2, 16, 16, 16)
    assert out.last.shape == (2, 16, 16, 16)
    assert out.embedding.shape == (2, 32)
    assert [tuple(p.shape[-2:]) for p in out.pyramid] == [(2, 2), (4, 4), (8, 8), (16, 16)]
    # The embedding is the global average of the last stack's features, whose 1x1 conv gives heatmaps.
    head = model.outs[-1]
    pooled_heat = out.last.mean(dim=(2, 3))
    assert torch.allclose(head(out.embedding[:, :, None, None]).flatten(1), pooled_heat, atol=1e-5)


def test_input_skip_changes_the_network_but_not_its_parameters():
    torch.manual_seed(0)
    newell = StackedHourglass(2, 32, 2, 16, input_skip=True).eval()
    anchor = StackedHourglass(2, 32, 2, 16, input_skip=False).eval()
    anchor.load_state_dict(newell.state_dict())
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(newell(x).heatmaps[:, 0], anchor(x).heatmaps[:, 0])
    assert not torch.allclose(newell(x).heatmaps[:, 1], anchor(x).heatmaps[:, 1])


def test_bad_input_size_is_a_clear_error():
    from omegaconf import OmegaConf

    from hourglass.errors import AlposeError
    from hourglass.factories import build_model

    cfg = OmegaConf.create(
        {"name": "m", "stacks": 1, "channels": 16, "depth": 3, "input_skip": True}
    )
    with pytest.raises(AlposeError, match="multiple of 32"):
        build_model(cfg, joints=16, image_size=48)
