"""Objects built from composed configs: the training settings and the stacked hourglass."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from hourglass.augment import AugmentConfig
from hourglass.checks import (
    Rule,
    check,
    check_all,
    count,
    non_negative,
    ordered,
    positive,
    probability,
)
from hourglass.errors import AlposeError
from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig

# What every number of the ``train`` group allows (configs/train/*.yaml).
TRAIN_RULES: dict[str, Rule] = {
    "epochs": count(1),
    "batch_size": count(1),
    "eval_batch_size": count(1),
    "lr": positive(what="a learning rate"),
    "weight_decay": non_negative(),
    "sigma": positive(what="a heatmap sigma in heatmap pixels"),
    "peak": positive(what="a heatmap peak value"),
    "plateau_factor": Rule(low=0, high=1, low_open=True, high_open=True, what="a decay factor"),
    "plateau_patience": count(0),
    "plateau_cooldown": count(0),
    "min_lr": non_negative(),
    "prefetch": count(0),
    "augment.flip": probability(),
    "augment.shift": Rule(low=0, high=1, what="a fraction of the crop side"),
    "augment.scale_min": positive(),
    "augment.scale_max": positive(),
    "augment.rotate": Rule(low=0, high=180, what="an angle in degrees"),
}
MODEL_RULES: dict[str, Rule] = {"stacks": count(1), "channels": count(1), "depth": count(1)}
SEED_RULE = count(0, null=True, what="a seed")
THREADS_RULE = count(1, null=True, what="a thread count")


def check_train_numbers(cfg: Any) -> None:
    """Refuse a bad number of a composed config's ``train`` group, ``seed`` or ``threads``, in one
    line naming the key, the value and what is allowed."""
    train = _plain(cfg.get("train"))
    check_all(train, TRAIN_RULES, "train.")
    aug = train.get("augment") or {}
    ordered(
        "train.augment.scale_min",
        aug.get("scale_min"),
        "train.augment.scale_max",
        aug.get("scale_max"),
    )
    check("seed", cfg.get("seed"), SEED_RULE)
    check("threads", cfg.get("threads"), THREADS_RULE)


def check_model_numbers(model_cfg: Any) -> None:
    """Refuse a bad number of a ``model`` config (stacks, channels and depth: whole numbers >= 1)."""
    check_all(_plain(model_cfg), MODEL_RULES, "model.")


def _plain(node: Any) -> dict:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def train_config(cfg: DictConfig):
    """The :class:`TrainConfig` of a composed config (``train`` group plus seed and device); a
    bad number is refused in one line first (:func:`check_train_numbers`)."""
    check_train_numbers(cfg)
    fields = OmegaConf.to_container(cfg.train, resolve=True)
    augment = AugmentConfig(**fields.pop("augment", {}))
    seed = cfg.get("seed")  # null in a run config that covers every seed (the cells set theirs)
    return TrainConfig(**fields, augment=augment, seed=int(seed or 0), device=str(cfg.device))


def build_model(model_cfg: DictConfig, joints: int, image_size: int):
    """A :class:`StackedHourglass` from a ``model`` config, checked against the input size."""
    check_model_numbers(model_cfg)
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
