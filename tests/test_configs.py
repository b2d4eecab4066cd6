"""Every shipped config composes, and every acquirer config builds its acquirer (no data, no training).

Modelled on lightning-hydra-template's ``tests/test_configs.py``. The options are globbed from
``configs/`` (``$ALPOSE_CONFIGS`` where set), so a new yaml file is tested without touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from hourglass.config import config_dir

CONFIGS = config_dir()


def options(group: str) -> list[str]:
    """Stems of ``configs/<group>/*.yaml``, sorted."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def composed(config: str, overrides: list[str]) -> DictConfig:
    """``configs/<config>.yaml`` composed with ``overrides``, as the CLI composes it (Hydra's own
    ``hydra`` node left out), every interpolation resolved."""
    with initialize_config_dir(str(Path(CONFIGS).resolve()), version_base=None):
        cfg = compose(config_name=config, overrides=overrides)
    OmegaConf.resolve(cfg)  # a broken ${...} fails here, not at the first run that reads it
    return cfg


def test_every_group_has_options():
    for group in ("experiment", "acquirer", "model", "dataset", "train", "protocol", "logger"):
        assert options(group), f"configs/{group}/ holds no yaml"


def test_run_composes_with_no_overrides():
    cfg = composed("run", [])
    assert cfg.name == "quickstart"  # the default experiment


def _checked_run(cfg: DictConfig, name: str) -> None:
    """What ``alpose run`` builds from a composed config before it loads data, built here."""
    from active.acquirers.registry import build_acquirer, known_acquirers
    from active.loop.experiment import TrainingProtocol, plan_from_config
    from active.loop.run_config import acquirer_configs
    from hourglass.factories import build_model, train_config

    unknown = sorted(set(map(str, cfg.acquirers)) - set(known_acquirers()))
    assert not unknown, f"experiment {name}: acquirers {unknown} have no configs/acquirer/*.yaml"
    for acquirer_name, node in acquirer_configs(cfg).items():
        acquirer = build_acquirer(node)
        assert callable(acquirer.select), acquirer_name
    TrainingProtocol(**OmegaConf.to_container(cfg.protocol))
    plan = plan_from_config(cfg, pool_size=10**9)
    assert plan.cycles >= 1 and plan.epochs_first >= 1
    train_config(cfg if cfg.get("seed") is not None else OmegaConf.merge(cfg, {"seed": 0}))
    build_model(cfg.model, 16, int(cfg.dataset.size))


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_composes_and_builds(name):
    cfg = composed("run", [f"experiment={name}"])
    assert cfg.dataset.name and cfg.model.name and cfg.protocol.name
    _checked_run(cfg, name)


@pytest.mark.parametrize("protocol", options("protocol"))
@pytest.mark.parametrize("name", options("acquirer"))
def test_acquirer_config_builds_through_the_registry(name, protocol):
    from active.acquirers.base import keeps_anchor_bugs
    from active.acquirers.registry import acquirer_config, build_acquirer

    cfg = composed("run", [f"acquirer={name}", f"protocol={protocol}"])
    assert cfg.acquirer.name == name, (
        f"configs/acquirer/{name}.yaml names itself {cfg.acquirer.name}"
    )
    acquirer = build_acquirer(cfg.acquirer)  # the `alpose run acquirer=<name>` path
    assert callable(acquirer.select)
    if "anchor_bugs" in cfg.acquirer:  # auto: the anchor's behaviour under protocol=paper only
        keep = {"keep": True, "fix": False, "auto": protocol == "paper"}[acquirer.anchor_bugs]
        assert keeps_anchor_bugs(acquirer.anchor_bugs, cfg.protocol.name) is keep
    assert type(build_acquirer(name)) is type(acquirer)  # the `acquirers=[<name>]` path
    assert acquirer_config(name).name == name


@pytest.mark.parametrize("logger", options("logger"))
def test_run_composes_with_each_logger(logger):
    cfg = composed("run", [f"logger={logger}"])
    assert cfg.logger.name == logger


@pytest.mark.parametrize("model", options("model"))
def test_train_composes_with_each_model(model):
    from hourglass.factories import build_model

    cfg = composed("train", [f"model={model}"])
    assert cfg.model.name == model
    size = 4 * 2 ** int(cfg.model.depth)  # the smallest input this model accepts
    build_model(cfg.model, 16, size)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_train_composes_with_each_dataset(dataset):
    cfg = composed("train", [f"dataset={dataset}"])
    assert cfg.dataset.name == dataset
    assert int(cfg.dataset.size) > 0
    assert cfg.dataset.select_split and len(cfg.dataset.report_splits)


@pytest.mark.parametrize("train", options("train"))
def test_train_composes_with_each_train_option(train):
    from hourglass.factories import train_config

    cfg = composed("train", [f"train={train}"])
    tcfg = train_config(cfg)
    assert tcfg.epochs >= 1 and tcfg.batch_size >= 1
