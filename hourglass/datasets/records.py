"""What a real-dataset reader returns: annotated persons in source-image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PersonTable:
    """One row per person. Coordinates are 0-based image pixels (pixel centres on integers).

    visibility: 1 visible, 0 annotated but occluded, -1 absent (its coordinates are meaningless).
    normaliser: PCK length in image pixels (full head-box diagonal, or torso; nan if unknown).
    split: index into ``cache.SPLIT_NAMES``; image: file path of the photo, relative to ``root``.
    """

    image: list[str]
    joints: np.ndarray
    visibility: np.ndarray
    normaliser: np.ndarray
    split: np.ndarray
    source_index: np.ndarray
    dataset: str
    joint_names: tuple[str, ...]
    normaliser_kind: str
    family: np.ndarray | None = None
    family_names: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image)

    def take(self, keep: np.ndarray) -> PersonTable:
        """The rows where ``keep`` (bool mask or index array) holds."""
        keep = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return PersonTable(
            image=[self.image[i] for i in keep],
            joints=self.joints[keep],
            visibility=self.visibility[keep],
            normaliser=self.normaliser[keep],
            split=self.split[keep],
            source_index=self.source_index[keep],
            dataset=self.dataset,
            joint_names=self.joint_names,
            normaliser_kind=self.normaliser_kind,
            family=None if self.family is None else self.family[keep],
            family_names=self.family_names,
            info=dict(self.info),
        )
