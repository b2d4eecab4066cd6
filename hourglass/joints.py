"""Joint orders, flip pairs and skeleton links (MPII's 16-joint order is the internal order).

Sources: MPII annopoints ids; flip pairs as in microsoft/human-pose-estimation.pytorch
``lib/dataset/mpii.py``; LSP order from the LSP README (see ``docs/conventions.md`` s. 5).
"""

from __future__ import annotations

MPII_JOINTS: tuple[str, ...] = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
)
MPII_INDEX = {name: i for i, name in enumerate(MPII_JOINTS)}

# Left/right pairs in MPII order; a horizontal flip swaps them.
MPII_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 5),
    (1, 4),
    (2, 3),
    (10, 15),
    (11, 14),
    (12, 13),
)

# Skeleton links (parent, child) in MPII order, used for drawing and for the synthetic body.
MPII_LINKS: tuple[tuple[int, int], ...] = (
    (9, 8),  # head_top - upper_neck
    (8, 7),  # neck - thorax
    (7, 6),  # thorax - pelvis
    (7, 13),
    (13, 14),
    (14, 15),  # left arm
    (7, 12),
    (12, 11),
    (11, 10),  # right arm
    (6, 3),
    (3, 4),
    (4, 5),  # left leg
    (6, 2),
    (2, 1),
    (1, 0),  # right leg
)

LSP_JOINTS: tuple[str, ...] = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "neck",
    "head_top",
)
LSP_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))
# LSP index i is MPII index LSP_TO_MPII[i]; MPII order restricted to these is the LSP order.
LSP_TO_MPII: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9)


# Skeleton links in LSP order (LSP_JOINTS): a tree rooted at head_top (13) through the neck (12);
# LSP has no pelvis, so each hip hangs from the shoulder on its side (the anchor's VL4Pose tree).
LSP_LINKS: tuple[tuple[int, int], ...] = (
    (13, 12),
    (12, 8),
    (8, 7),
    (7, 6),  # right arm
    (12, 9),
    (9, 10),
    (10, 11),  # left arm
    (8, 2),
    (2, 1),
    (1, 0),  # right shoulder - right leg
    (9, 3),
    (3, 4),
    (4, 5),  # left shoulder - left leg
)


def skeleton_links(num_joints: int) -> tuple[tuple[int, int], ...]:
    """(parent, child) links of the skeleton tree, parents before children (MPII 16, LSP 14)."""
    links = {16: MPII_LINKS, 14: LSP_LINKS}.get(num_joints)
    if links is None:
        raise ValueError(f"no skeleton known for {num_joints} joints (MPII has 16, LSP 14)")
    return links


def flip_permutation(num_joints: int) -> list[int]:
    """Index permutation that relabels joints after a horizontal flip (left <-> right)."""
    pairs = {16: MPII_FLIP_PAIRS, 14: LSP_FLIP_PAIRS}.get(num_joints)
    if pairs is None:
        raise ValueError(f"no flip pairs known for {num_joints} joints (expected 16 or 14)")
    perm = list(range(num_joints))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm
