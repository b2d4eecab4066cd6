"""Acquirers by name: ``configs/acquirer/<name>.yaml`` holds ``name``, ``_target_`` and kwargs.

``build_acquirer`` instantiates such a node with Hydra, so ``acquirer._target_=my.module.Class``
on the command line plugs in a new acquirer without touching this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra.utils
from omegaconf import DictConfig, OmegaConf

from active.acquirers.base import Acquirer
from hourglass.config import config_dir
from hourglass.errors import AlposeError

GROUP = "acquirer"
# Config keys that describe the acquirer or how the runner uses it, not its constructor's:
# pool_subsample (optional) scores only a seeded random subset of that size of the pool each cycle,
# for this acquirer alone (the experiment-wide ``pool_subsample`` otherwise); amp (optional, default
# false) runs its inference under bf16 autocast instead of fp32.
META_KEYS = ("name", "pool_subsample", "amp")


def known_acquirers() -> list[str]:
    """Names of the shipped acquirer configs (stems of ``configs/acquirer/*.yaml``), sorted."""
    return sorted(p.stem for p in (config_dir() / GROUP).glob("*.yaml"))


def acquirer_config(name: str) -> DictConfig:
    """Load ``configs/acquirer/<name>.yaml``; an unknown name is an error listing the known ones."""
    path = config_dir() / GROUP / f"{name}.yaml"
    if not path.is_file():
        raise AlposeError(
            f"unknown acquirer '{name}'; known: {', '.join(known_acquirers())} "
            f"(or add configs/acquirer/{name}.yaml, or plug one in with acquirer._target_=module.Class)"
        )
    return OmegaConf.load(path)


def build_acquirer(cfg: DictConfig | Mapping[str, Any] | str) -> Acquirer:
    """Instantiate an acquirer from a config node with ``_target_`` (or from a config name)."""
    node = acquirer_config(cfg) if isinstance(cfg, str) else cfg
    if isinstance(node, DictConfig):  # resolve interpolations while the parent config is attached
        node = OmegaConf.to_container(node, resolve=True)
    target = node.get("_target_")
    if not target:
        raise AlposeError(f"acquirer config {node.get('name', '?')!r} has no _target_")
    kwargs = {k: v for k, v in node.items() if k not in META_KEYS}
    try:
        acquirer = hydra.utils.instantiate(kwargs)
    except Exception as exc:  # Hydra wraps import and constructor errors alike
        reason = " ".join(str(exc).split(", set env var HYDRA_FULL_ERROR")[0].split())  # one line
        raise AlposeError(f"cannot build acquirer {target}: {reason}") from exc
    if not callable(getattr(acquirer, "select", None)):
        raise AlposeError(f"acquirer {target} has no select(ctx, k) method")
    sub = node.get("pool_subsample")
    if sub is not None:
        if int(sub) < 1:
            raise AlposeError(f"acquirer {node.get('name', target)}: pool_subsample must be >= 1")
        acquirer.pool_subsample = int(sub)
    if node.get("amp") is not None:
        acquirer.amp = bool(node["amp"])
    return acquirer


def inference_amp(acquirer: Any) -> bool:
    """Whether ``acquirer`` scores under bf16 autocast (its config's ``amp``); fp32 by default."""
    return bool(getattr(acquirer, "amp", False))
