"""Acquirer details that must equal the anchor's (shared/spec/anchor.md 1.3 and 6.4): VL4Pose's LSP
skeleton and Learning Loss's joint count n in l / (n + 0.1)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from active.acquirers import learning_loss
from active.acquirers.learning_loss import LearningLossAcquirer
from active.acquirers.vl4pose import skeleton_links
from hourglass.joints import LSP_JOINTS, MPII_JOINTS
from hourglass.model import StackedHourglass
from hourglass.train import AuxBatch

# The anchor's VL4Pose links by name (anchor.md 1.3): LSP has no pelvis or thorax, so each hip
# hangs from its own shoulder.
ANCHOR_LSP_LINKS = {
    ("head_top", "neck"),
    ("neck", "l_shoulder"),
    ("neck", "r_shoulder"),
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"),
    ("r_shoulder", "r_elbow"),
    ("r_elbow", "r_wrist"),
    ("l_shoulder", "l_hip"),
    ("r_shoulder", "r_hip"),
    ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"),
    ("r_hip", "r_knee"),
    ("r_knee", "r_ankle"),
}
ANCHOR_MPII_LINKS = {
    ("head_top", "upper_neck"),
    ("upper_neck", "thorax"),
    ("thorax", "pelvis"),
    ("thorax", "l_shoulder"),
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"),
    ("thorax", "r_shoulder"),
    ("r_shoulder", "r_elbow"),
    ("r_elbow", "r_wrist"),
    ("pelvis", "l_hip"),
    ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"),
    ("pelvis", "r_hip"),
    ("r_hip", "r_knee"),
    ("r_knee", "r_ankle"),
}


@pytest.mark.parametrize(
    ("names", "want"), [(LSP_JOINTS, ANCHOR_LSP_LINKS), (MPII_JOINTS, ANCHOR_MPII_LINKS)]
)
def test_vl4pose_skeletons_are_the_anchors(names, want):
    links = skeleton_links(len(names))
    assert {(names[p], names[c]) for p, c in links} == want
    seen = {next(j for j in range(len(names)) if j not in {c for _, c in links})}  # the root
    for p, c in links:  # a tree, parents before children: the likelihood's order
        assert p in seen and c not in seen
        seen.add(c)
    assert len(seen) == len(names)


def lsp_like(kind: str) -> SimpleNamespace:
    """Enough of a cache for building a head: 14 joints, 64 px, the normaliser kind."""
    return SimpleNamespace(num_joints=14, image_size=64, normaliser_kind=kind, has_margin=False)


def head_loss_target(monkeypatch, data, protocol: str, vis: torch.Tensor) -> torch.Tensor:
    """The per-sample targets l / (n + 0.1) (l = 1) that the Learning Loss head's loss sees."""
    acquirer = LearningLossAcquirer(objective="margin", head="pooled")
    head = acquirer.auxiliary_head(StackedHourglass(1, 16, 2, data.num_joints), data, protocol)
    seen = {}

    def spy(predicted, true, margin):
        seen["true"] = true
        return predicted.sum() * 0

    monkeypatch.setattr(learning_loss, "margin_ranking_loss", spy)
    batch = AuxBatch(None, None, vis >= 0, vis == 1)
    head.loss(torch.zeros(len(vis)), torch.ones(len(vis)), batch)
    return seen["true"]


def test_learning_loss_counts_visible_joints_on_lsp_as_the_anchor(monkeypatch):
    vis = torch.tensor([[1] * 14, [1] * 10 + [0] * 4, [1] * 7 + [-1] * 7], dtype=torch.int8)
    paper = head_loss_target(monkeypatch, lsp_like("torso"), "paper", vis)
    torch.testing.assert_close(paper, torch.tensor([1 / 14.1, 1 / 10.1, 1 / 7.1]))
    fixed = head_loss_target(
        monkeypatch, lsp_like("torso"), "standard", vis
    )  # occluded joints have targets
    torch.testing.assert_close(fixed, torch.tensor([1 / 14.1, 1 / 14.1, 1 / 7.1]))
    mpii = head_loss_target(
        monkeypatch, lsp_like("head_diagonal"), "paper", vis
    )  # annotated joints, as now
    torch.testing.assert_close(mpii, torch.tensor([1 / 14.1, 1 / 14.1, 1 / 7.1]))
