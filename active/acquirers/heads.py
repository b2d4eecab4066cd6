"""Auxiliary networks on the pose net's detached outputs (Learning Loss, aleatoric, VL4Pose).

``conv`` (the anchor's, docs/anchor.md 3.2): start at the finest map of the last hourglass's pyramid;
for each coarser map, x <- ReLU(conv 2x2 stride 2 (x)) + map; then a conv as large as the coarsest
map, ReLU, and an MLP C-128-64-32-16-out (ReLU between layers, none after the last). At the paper
size (256 channels, 64x64 maps, depth 4) it has 2,142,209 parameters for one output, the anchor's
~2.142M. ``pooled`` (Yoo & Kweon, CVPR 2019): per map, global average pool -> FC(128) -> ReLU; the
concatenation -> FC(out). Inputs are cast to float32 (the pose net may run under bf16 autocast).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from hourglass.datasets.cache import PoseCache
from hourglass.errors import AlposeError
from hourglass.model import PoseOutput

HeadKind = Literal["conv", "pooled"]
MLP_WIDTHS = (128, 64, 32, 16)  # anchor AuxiliaryNet.py:37-43


def mlp(inp: int, out: int, widths: tuple[int, ...] = MLP_WIDTHS) -> nn.Sequential:
    """Linear layers inp -> widths... -> out with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(inp, width), nn.ReLU()]
        inp = width
    return nn.Sequential(*layers, nn.Linear(inp, out))


class ConvPyramidHead(nn.Module):
    """The anchor's 'conv' auxiliary net over ``levels`` pyramid maps of ``channels`` channels."""

    def __init__(self, channels: int, levels: int, coarsest: int, out: int) -> None:
        super().__init__()
        self.downs = nn.ModuleList(
            nn.Conv2d(channels, channels, 2, stride=2) for _ in range(levels - 1)
        )
        self.squeeze = nn.Conv2d(channels, channels, coarsest)
        self.mlp = mlp(channels, out)
        self.out = out

    def forward(self, output: PoseOutput) -> Tensor:
        maps = [m.float() for m in output.pyramid]  # coarsest first
        x = maps[-1]
        for down, finer_to_coarser in zip(self.downs, reversed(maps[:-1]), strict=True):
            x = torch.relu(down(x)) + finer_to_coarser
        x = torch.relu(self.squeeze(x)).flatten(1)
        y = self.mlp(x)
        return y.squeeze(-1) if self.out == 1 else y


class PooledHead(nn.Module):
    """Yoo & Kweon's loss-prediction module: GAP + FC(width) + ReLU per map, concatenated, FC."""

    def __init__(self, channels: int, levels: int, out: int, width: int = 128) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(channels, width) for _ in range(levels))
        self.final = nn.Linear(width * levels, out)
        self.out = out

    def forward(self, output: PoseOutput) -> Tensor:
        feats = [
            torch.relu(fc(m.float().mean(dim=(2, 3))))
            for fc, m in zip(self.fcs, output.pyramid, strict=True)
        ]
        y = self.final(torch.cat(feats, dim=1))
        return y.squeeze(-1) if self.out == 1 else y


def build_head(kind: HeadKind, model: nn.Module, data: PoseCache, out: int) -> nn.Module:
    """A head of ``kind`` for a stacked hourglass (``channels``, ``depth``, ``stride``) on ``data``."""
    try:
        channels, depth, stride = int(model.channels), int(model.depth), int(model.stride)
    except AttributeError as exc:
        raise AlposeError(
            f"auxiliary heads need a stacked hourglass (channels, depth, stride); got {type(model).__name__}"
        ) from exc
    levels = depth + 1  # the pyramid: depth low3 maps and the full-resolution output
    if kind == "pooled":
        return PooledHead(channels, levels, out)
    if kind != "conv":
        raise AlposeError(f"unknown auxiliary head {kind!r}; use conv or pooled")
    heatmap = data.image_size // stride
    coarsest = heatmap // 2**depth
    if coarsest < 1 or coarsest * 2**depth != heatmap:
        raise AlposeError(
            f"the conv head needs a heatmap size ({heatmap}) divisible by 2**depth ({2**depth})"
        )
    return ConvPyramidHead(channels, levels, coarsest, out)
