"""Objects built from composed configs: the training settings and the stacked hourglass."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from hourglass.augment import AugmentConfig
from hourglass.errors import AlposeError
from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig


def train_config(cfg: DictConfig):
    """The :class:`TrainConfig` of a composed config (``train`` group plus seed and device)."""
    fields = OmegaConf.to_container(cfg.train, resolve=True)
    augment = AugmentConfig(**fields.pop("augment", {}))
    seed = cfg.get("seed")  # null in a run config that covers every seed (the cells set theirs)
    return TrainConfig(**fields, augment=augment, seed=int(seed or 0), device=str(cfg.device))


def build_model(model_cfg: DictConfig, joints: int, image_size: int):
    """A :class:`StackedHourglass` from a ``model`` config, checked against the input size."""
    multiple = 4 * 2 ** int(model_cfg.depth)
    if image_size % multiple:
        raise AlposeError(
            f"input size {image_size} px does not fit model '{model_cfg.name}' (depth "
            f"{model_cfg.depth} needs a multiple of {multiple}); change dataset.size or model.depth"
        )
    return StackedHourglass(
        stacks=int(model_cfg.stacks),
        channels=int(model_cfg.channels),
        depth=int(model_cfg.depth),
        joints=joints,
        input_skip=bool(model_cfg.input_skip),
    )
