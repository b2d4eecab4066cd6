"""From a ``dataset`` config to its cache file: the path, the command that makes it, loading it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hourglass.checks import Rule, check, check_all, count, positive, probability
from hourglass.config import load_group
from hourglass.datasets.cache import SPLIT_NAMES, PoseCache, load_cache
from hourglass.datasets.real import REAL_DATASETS, cache_file, prepare_hint
from hourglass.datasets.synthetic import GENERATOR_VERSION, SyntheticConfig
from hourglass.errors import AlposeError


def _plain(cfg: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


# What the numbers of a dataset config allow (configs/dataset/*.yaml), synthetic and real.
SYNTHETIC_RULES: dict[str, Rule] = {"seed": count(0, what="a seed")}
SPLIT_RULE = count(0, what="a number of persons")
REAL_RULES: dict[str, Rule] = {
    "size": count(8, what="a crop side in pixels"),
    "store_size": count(8, what="a stored window side in pixels"),
    "max_bad_fraction": probability(),
    "head_pull": probability(),
    "lspet_count": count(1, null=True),
    "lspet_test": count(1),
    "crop.eval": positive(what="a crop scale"),
    "crop.store_scale": positive(what="a crop scale"),
}


def check_dataset_numbers(cfg: DictConfig | dict) -> None:
    """Refuse a bad number of a dataset config in one line (key, value, what is allowed); the
    synthetic generator's knobs are checked by ``SyntheticConfig.validate``."""
    c = _plain(cfg)
    if c.get("name") == "synthetic":
        check_all(c, SYNTHETIC_RULES, "dataset.", _SYNTHETIC_HINT)
        splits = c.get("splits")
        if not isinstance(splits, dict):
            raise AlposeError(
                f"dataset.splits={splits!r} is not allowed: it must map split names "
                f"({', '.join(SPLIT_NAMES)}) to numbers of persons"
            )
        unknown = sorted(set(map(str, splits)) - set(SPLIT_NAMES))
        if unknown:
            raise AlposeError(
                f"unknown split(s) {', '.join(unknown)} in dataset.splits; use {', '.join(SPLIT_NAMES)}"
            )
        for split, n in splits.items():
            hint = f"pass `--{split} N` to `alpose prepare synthetic` or dataset.splits.{split}=N"
            check(f"dataset.splits.{split}", n, SPLIT_RULE, hint)
        if sum(splits.values()) < 1:
            raise AlposeError(
                f"dataset.splits={splits} holds no person: render at least one (e.g. "
                "`alpose prepare synthetic --train 4000 --val 500 --test 500`)"
            )
        return
    check_all(c, REAL_RULES, "dataset.")
    train = (c.get("crop") or {}).get("train")
    if train is not None:
        bad = not isinstance(train, list | tuple) or len(train) != 2
        if not bad:
            for value in train:
                check("dataset.crop.train", value, positive(what="a crop scale"))
            bad = train[0] > train[1]
        if bad:
            raise AlposeError(
                f"dataset.crop.train={train!r} is not allowed: it must be a range [low, high] of "
                "positive crop scales with low <= high, e.g. [1.5, 2.0]"
            )


_SYNTHETIC_HINT = "pass `--seed N` to `alpose prepare synthetic` or dataset.seed=N"


def synthetic_identity(cfg: DictConfig | dict) -> dict[str, Any]:
    """Everything that determines the synthetic cache's bytes; a bad number or knob is refused
    in one line (:func:`check_dataset_numbers`, ``SyntheticConfig.validate``)."""
    c = _plain(cfg)
    check_dataset_numbers({**c, "name": "synthetic"})
    knobs = {**c.get("generator", {}), "size": c["size"]}
    unknown = sorted(set(knobs) - {f.name for f in fields(SyntheticConfig)})
    if unknown:
        known = ", ".join(f.name for f in fields(SyntheticConfig))
        raise AlposeError(
            f"unknown synthetic generator knob(s) {', '.join(unknown)}; known: {known}"
        )
    gen = SyntheticConfig(**knobs)
    gen.validate()
    generator = asdict(gen)
    return {
        "size": c["size"],
        "seed": c["seed"],
        "splits": c["splits"],
        "generator": generator,
        "generator_version": GENERATOR_VERSION,
    }


def cache_path(cfg: DictConfig | dict, data_dir: str | Path) -> Path:
    """The cache file a dataset config reads (synthetic: named by a hash of its settings)."""
    c = _plain(cfg)
    if c["name"] == "synthetic":
        digest = hashlib.sha1(
            json.dumps(synthetic_identity(c), sort_keys=True).encode()
        ).hexdigest()
        return Path(data_dir) / f"synthetic-{c['size']}px-seed{c['seed']}-{digest[:8]}.h5"
    if c.get("cache"):
        return Path(c["cache"])

    if c["name"] in REAL_DATASETS:
        return cache_file(c, data_dir)
    raise AlposeError(f"dataset '{c['name']}' has no cache path configured")


def prepare_command(cfg: DictConfig | dict, data_dir: str | Path = "data") -> str:
    """The ``alpose prepare`` command that creates this config's cache (flags only where they differ)."""
    c = _plain(cfg)
    if c["name"] != "synthetic":
        if c["name"] in REAL_DATASETS:
            hint = prepare_hint(c)
            return hint + (f" --data-dir {data_dir}" if str(data_dir) != "data" else "")
        return f"alpose prepare {c['name']}"
    default = _plain(load_group("dataset", "synthetic"))
    parts = ["alpose prepare synthetic"]
    for key in ("size", "seed"):
        if c[key] != default[key]:
            parts.append(f"--{key} {c[key]}")
    for split, n in c["splits"].items():
        if default["splits"].get(split) != n:
            parts.append(f"--{split} {n}")
    for key, value in sorted(c.get("generator", {}).items()):
        parts.append(f"--set {key}={json.dumps(value)}")
    if str(data_dir) != "data":
        parts.append(f"--data-dir {data_dir}")
    return " ".join(parts)


def load_dataset(cfg: DictConfig | dict, data_dir: str | Path, sharers: int = 1) -> PoseCache:
    """Load the cache of a dataset config; a missing one names the command that creates it.

    ``in_memory`` and ``head_pull`` (training targets; paper 0.8) come from it. ``in_memory``:
    true reads the images into RAM, false serves them from disk per batch, null (default) reads
    them into RAM when they take at most half of the machine's available memory, split between
    ``sharers`` processes that load it at once (``cache.memory_choice``); the load prints which
    and why.
    """
    c = _plain(cfg)
    in_memory = c.get("in_memory")
    cache = load_cache(
        cache_path(c, data_dir),
        prepare_hint=prepare_command(c, data_dir),
        in_memory=None if in_memory is None else bool(in_memory),
        sharers=sharers,
    )
    cache.target_head_pull = float(c.get("head_pull") or 0.0)
    return cache
