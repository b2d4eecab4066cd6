"""Every number of a composed ``alpose run`` config, checked before anything is stored.

:func:`check_run_config` refuses a bad value in one :class:`AlposeError` line that names the key,
the value and what is allowed: seeds (whole numbers >= 0, each once), threads and jobs, the budgets
(``initial``, ``per_cycle``, ``cycles`` or ``budgets``), epochs, the ``train`` group
(``hourglass.factories.check_train_numbers``), the model, the dataset (its synthetic generator's
knobs too), the protocol's hold-out fraction, and the acquirers' settings (``acquirer_settings``
naming an acquirer that does not exist, a setting it does not have, or, on the command line, an
acquirer that is not in this run). ``check_or_store_config`` and the dry run call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from active.acquirers.registry import META_KEYS, acquirer_config, known_acquirers
from hourglass.checks import (
    Rule,
    check,
    check_all,
    count,
    fraction,
    non_negative,
    positive,
    refuse,
)
from hourglass.datasets.registry import check_dataset_numbers, synthetic_identity
from hourglass.errors import AlposeError
from hourglass.factories import check_model_numbers, check_train_numbers

# Top-level numbers of configs/run.yaml and configs/experiment/*.yaml.
RUN_RULES: dict[str, Rule] = {
    "seed": count(0, null=True, what="a seed"),
    "jobs": count(1, what="a number of processes"),
    "threads": count(1, null=True, what="a thread count"),
    "epochs_first": count(1, what="a number of epochs"),
    "epochs_later": count(1, what="a number of epochs"),
    "pool_subsample": count(1, null=True, what="a number of pool images"),
}
# The budget schedule when no explicit ``budgets`` list is given.
PLAN_RULES: dict[str, Rule] = {
    "initial": count(1, what="a number of persons labelled at cycle 0"),
    "per_cycle": count(1, what="a number of images added per cycle"),
    "cycles": count(1, what="a number of acquisition cycles"),
}
SEED_RULE = count(0, what="a seed")
BUDGET_RULE = count(1, what="a number of labelled persons")
# Settings of the shipped acquirers (configs/acquirer/*.yaml) that are numbers.
ACQUIRER_RULES: dict[str, Rule] = {
    "pool_subsample": count(1, null=True),
    "batch_size": count(1, null=True),
    "chunk": count(1),
    "k": count(1, what="a number of neighbours"),
    "perplexity": positive(),
    "tolerance": positive(),
    "max_iter": count(1),
    "grad_batch": count(1, null=True),
    "grad_memory_mb": positive(),
    "target_memory_mb": positive(),
    "gt_sigma": positive(),
    "gt_peak": positive(),
    "members": count(1),
    "mc_passes": count(1),
    "dropout": Rule(low=0, high=1, high_open=True, what="a dropout probability"),
    "weight": non_negative(),
    "head_epochs": count(1, null=True),
    "margin": non_negative(),
    "min_distance": count(1),
    "num_peaks": count(1),
}
SETTINGS = "acquirer_settings"


def check_run_config(cfg: DictConfig, acquirers: Mapping[str, Any] | None = None) -> None:
    """Refuse the first bad number of a composed run config in one line (see the module text).

    ``acquirers``: name -> merged acquirer config (``run_config.acquirer_configs``); without it
    only the names in ``acquirer_settings`` are checked, not the acquirers' own numbers.
    """
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    _check_seeds(plain.get("seeds"))
    check_all(plain, RUN_RULES)
    _check_budgets(plain)
    check_train_numbers(plain)
    check_model_numbers(plain.get("model"))
    dataset = plain.get("dataset") or {}
    check_dataset_numbers(dataset)
    if dataset.get("name") == "synthetic":
        synthetic_identity(dataset)  # the generator's knobs
    _check_protocol(plain.get("protocol") or {})
    names = list(acquirers) if acquirers is not None else None
    _check_settings(plain.get(SETTINGS) or {}, names)
    for name, node in (acquirers or {}).items():
        if name in known_acquirers():
            node = (
                OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
            )
            check_all(node, ACQUIRER_RULES, f"{SETTINGS}.{name}.")


def _check_seeds(seeds: Any) -> None:
    if not isinstance(seeds, list | tuple):
        raise refuse("seeds", seeds, "a list of seeds, e.g. [0,1,2]", "set seeds=[0,1,...]")
    for seed in seeds:
        if not SEED_RULE.allows(seed):
            raise refuse(
                "seeds", list(seeds), f"a list of seeds, each {SEED_RULE.describe()}", _SEEDS_HINT
            )
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise refuse("seeds", list(seeds), "a list of distinct seeds", _SEEDS_HINT)


_SEEDS_HINT = "give each seed once, e.g. seeds=[0,1,2]"


def _check_budgets(plain: Mapping[str, Any]) -> None:
    budgets = plain.get("budgets")
    if budgets is None:
        check_all(plain, PLAN_RULES, hint="set it to a positive integer (or give budgets=[...])")
        return
    hint = "give budgets=[...] as strictly increasing positive integers, e.g. [100,200,300]"
    if not isinstance(budgets, list | tuple) or not budgets:
        raise refuse("budgets", budgets, "a non-empty list of labelled sizes, or null", hint)
    for b in budgets:
        if not BUDGET_RULE.allows(b):
            raise refuse("budgets", list(budgets), f"a list of {BUDGET_RULE.describe()}s", hint)
    if any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:], strict=False)):
        raise refuse(
            "budgets", list(budgets), "strictly increasing (every cycle adds images)", hint
        )


def _check_protocol(protocol: Mapping[str, Any]) -> None:
    value = protocol.get("holdout_fraction")
    if protocol.get("selection") == "holdout":
        rule = fraction(what="the share of the labelled set held out")
        check("protocol.holdout_fraction", value, rule)
    elif "holdout_fraction" in protocol:
        check("protocol.holdout_fraction", value, Rule(low=0, high=1, high_open=True))


def _check_settings(settings: Any, names: list[str] | None) -> None:
    """``acquirer_settings.<name>.<key>``: a real acquirer, a setting it has, and (when given on
    the command line of a plain run) an acquirer of this run."""
    if not isinstance(settings, Mapping):
        raise refuse(SETTINGS, settings, "a mapping acquirer -> settings", _SETTINGS_HINT)
    shipped = known_acquirers()
    for name, node in settings.items():
        if name not in shipped and name not in (names or ()):
            raise AlposeError(
                f"{SETTINGS}.{name}: there is no acquirer '{name}' (known: {', '.join(shipped)}); "
                f"fix the name, e.g. {_SETTINGS_HINT}"
            )
        if not isinstance(node, Mapping):
            raise refuse(
                f"{SETTINGS}.{name}", node, "a mapping of that acquirer's settings", _SETTINGS_HINT
            )
        if name in shipped:
            allowed = set(acquirer_config(name)) | set(META_KEYS)
            unknown = sorted(set(map(str, node)) - allowed)
            if unknown:
                raise AlposeError(
                    f"{SETTINGS}.{name}.{unknown[0]}: acquirer {name} has no setting "
                    f"'{unknown[0]}' (its settings: {', '.join(sorted(allowed - {'name', '_target_'}))})"
                    f"; fix the key"
                )
    if names is None:
        return
    for name in sorted(_command_line_names()):
        if name not in names:
            raise AlposeError(
                f"{SETTINGS}.{name} is set on the command line but acquirer {name} is not in this "
                f"run (acquirers: {', '.join(names)}); add it, e.g. acquirers=[{','.join([*names, name])}], "
                "or drop the override"
            )


_SETTINGS_HINT = "acquirer_settings.egl_pp.pool_subsample=1000"


def _command_line_names() -> set[str]:
    """Acquirers that ``acquirer_settings`` overrides on this plain run's command line name (none in
    a sweep (-m): another of its jobs may run them; none outside Hydra)."""
    if not HydraConfig.initialized():
        return set()
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return set()
    names: set[str] = set()
    for override in hydra.overrides.task:
        key, _, value = str(override).lstrip("+~").partition("=")
        if key.startswith(f"{SETTINGS}."):
            names.add(key.split(".")[1])
        elif key == SETTINGS and value.strip().startswith("{"):
            parsed = _yaml_value(value)
            if isinstance(parsed, Mapping):
                names |= {str(k) for k in parsed}
    return names


def _yaml_value(text: str) -> Any:
    """A Hydra dict override's value (``{egl_pp: {k: 3}}``, YAML's flow syntax) as plain data;
    None when unparsable."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None
