"""Stacked hourglass network (Newell et al., ECCV 2016) in the princeton-vl layout.

Pre-activation bottleneck residuals, intermediate supervision, 1x1 merge convolutions between
stacks, and no unused layers (the anchor builds a skip conv in every residual and never uses it
where in == out: docs/anchor.md 3.1, B20). The paper configuration (2 stacks, 256 channels, depth 4,
16 joints) has 6,570,400 parameters.

The forward pass returns, besides every stack's heatmaps, what acquirers need: the pooled embedding
(global average of the last stack's feature map) and the multi-scale pyramid of the last hourglass
that a Learning-Loss head taps (docs/anchor.md 3.1-3.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _conv(inp: int, out: int, kernel: int = 1, stride: int = 1) -> nn.Conv2d:
    """Conv with bias and 'same' padding, as in the reference implementation."""
    return nn.Conv2d(inp, out, kernel, stride, padding=(kernel - 1) // 2, bias=True)


class ConvBnRelu(nn.Sequential):
    """Conv -> BatchNorm -> ReLU (the stem and the per-stack feature conv)."""

    def __init__(self, inp: int, out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(
            _conv(inp, out, kernel, stride), nn.BatchNorm2d(out), nn.ReLU(inplace=True)
        )


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1(o/2), BN-ReLU-3x3(o/2), BN-ReLU-1x1(o), plus skip.

    The skip is a 1x1 conv only when the channel count changes (built only then).
    """

    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        mid = out // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(inp),
            nn.ReLU(),
            _conv(inp, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            _conv(mid, mid, 3),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            _conv(mid, out, 1),
        )
        self.skip = _conv(inp, out, 1) if inp != out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """Recursive hourglass of the given depth; records each level's ``low3`` output on the way up."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.up1 = Residual(channels, channels)
        self.pool = nn.MaxPool2d(2, 2)
        self.low1 = Residual(channels, channels)
        self.low2 = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.low3 = Residual(channels, channels)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: Tensor, taps: list[Tensor] | None = None) -> Tensor:
        up1 = self.up1(x)
        low1 = self.low1(self.pool(x))
        low2 = self.low2(low1, taps) if isinstance(self.low2, Hourglass) else self.low2(low1)
        low3 = self.low3(low2)
        if taps is not None:
            taps.append(low3)  # innermost (coarsest) first
        return up1 + self.up2(low3)


@dataclass
class PoseOutput:
    """What one forward pass returns.

    heatmaps: (B, stacks, J, H, W), every stack (intermediate supervision); the last is the prediction.
    embedding: (B, C) global average of the last stack's feature map (core-set, EGL++).
    pyramid: the last hourglass's ``low3`` outputs from coarsest to finest, then its full-resolution
        output: ``depth + 1`` maps of C channels (the Learning-Loss head's input, docs/anchor.md 3.2).
    """

    heatmaps: Tensor
    embedding: Tensor
    pyramid: list[Tensor]

    @property
    def last(self) -> Tensor:
        """(B, J, H, W) heatmaps of the last stack: the prediction."""
        return self.heatmaps[:, -1]

    def detach(self) -> PoseOutput:
        """A copy cut from the graph: what auxiliary heads see (stop-gradient)."""
        return PoseOutput(
            self.heatmaps.detach(), self.embedding.detach(), [p.detach() for p in self.pyramid]
        )


class StackedHourglass(nn.Module):
    """Stacked hourglass: stem /4, then ``stacks`` hourglasses of ``depth`` levels.

    ``input_skip=True`` is Newell's form x_{i+1} = x_i + merge_preds + merge_features; ``False`` is
    the anchor HEAD variant that drops the stack-input skip (docs/anchor.md 3.3, B3).
    The stem widths scale with ``channels`` (64 and 128 at the paper's 256).
    """

    def __init__(
        self,
        stacks: int = 2,
        channels: int = 256,
        depth: int = 4,
        joints: int = 16,
        input_skip: bool = True,
    ) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"channels must be a multiple of 4, got {channels}")
        self.stacks, self.channels, self.depth, self.joints = stacks, channels, depth, joints
        self.input_skip = input_skip
        c4, c2 = channels // 4, channels // 2
        self.stem = nn.Sequential(
            ConvBnRelu(3, c4, 7, 2),
            Residual(c4, c2),
            nn.MaxPool2d(2, 2),
            Residual(c2, c2),
            Residual(c2, channels),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels) for _ in range(stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(channels, channels), ConvBnRelu(channels, channels, 1))
            for _ in range(stacks)
        )
        self.outs = nn.ModuleList(_conv(channels, joints, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(_conv(channels, channels, 1) for _ in range(stacks - 1))
        self.merge_preds = nn.ModuleList(_conv(joints, channels, 1) for _ in range(stacks - 1))

    @property
    def stride(self) -> int:
        """Input pixels per heatmap pixel."""
        return 4

    def forward(self, images: Tensor) -> PoseOutput:
        """images: (B, 3, H, W) float in [0, 1) (uint8 / 256, as the anchor). H, W divisible by 2**(depth+2)."""
        x = self.stem(images)
        heatmaps, taps = [], []
        feature = x
        for i in range(self.stacks):
            last = i == self.stacks - 1
            hg = self.hourglasses[i](x, taps if last else None)
            if last:
                taps.append(hg)
            feature = self.features[i](hg)
            preds = self.outs[i](feature)
            heatmaps.append(preds)
            if not last:
                base = x if self.input_skip else feature
                x = base + self.merge_preds[i](preds) + self.merge_features[i](feature)
        embedding = feature.mean(dim=(2, 3))
        return PoseOutput(torch.stack(heatmaps, dim=1), embedding, taps)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
