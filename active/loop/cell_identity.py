"""The identity of the config that makes a cell: a hash each cell's ``state.json`` keeps.

It covers what the stored ``config.yaml`` compares (:mod:`active.loop.run_config`): every key but
the ones that may change between runs (device, seeds, jobs, paths, ...), with keys added since at
their old default, plus the cell's own acquirer config. So a cell is refused when another config
would continue it, even where ``config.yaml`` itself was lost or replaced.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from active.loop.run_config import ADDED_DEFAULTS, AUGMENT_PATH, FREE_DOTTED_KEYS, FREE_KEYS
from active.loop.threads import runs_on_cuda


def _flat(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted keys -> leaf values of a plain nested dict."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def cell_identity(cfg: DictConfig, acquirer: DictConfig | None) -> str:
    """sha256 of the kept keys of ``cfg`` and of ``acquirer``'s config (None: the shared cycle 0,
    which no acquirer shapes)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    flat = {
        k: v
        for k, v in _flat(plain).items()
        if k.split(".")[0] not in FREE_KEYS and k not in FREE_DOTTED_KEYS
    }
    flat = {k: v for k, v in flat.items() if k not in ADDED_DEFAULTS or ADDED_DEFAULTS[k] != v}
    if flat.get(AUGMENT_PATH) == "auto":
        flat[AUGMENT_PATH] = "batch" if runs_on_cuda(str(cfg.get("device", "auto"))) else "sample"
    if acquirer is not None:
        node = OmegaConf.to_container(acquirer, resolve=True)
        flat.update({f"acquirer.{k}": v for k, v in _flat(node).items()})
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
