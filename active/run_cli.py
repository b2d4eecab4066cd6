"""``alpose run``: every acquirer x seed x cycle of an experiment from one command (Hydra).

The same command again resumes: finished cycles are skipped. A result folder whose stored config
differs from the new one is refused, naming the differing keys and ``fresh=true``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hourglass.errors import AlposeError

# Keys that may change between runs of one experiment without invalidating its results.
FREE_KEYS = {
    "progress",
    "device",
    "jobs",
    "paths",
    "acquirers",
    "seeds",
    "fresh",
    "acquirer",
    "threads",
}


def acquirer_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """Name -> acquirer config: ``acquirers=[...]`` names plus an inline ``acquirer._target_=...``."""
    from active.acquirers.registry import acquirer_config

    configs = {str(name): acquirer_config(str(name)) for name in cfg.acquirers}
    custom = cfg.get("acquirer")
    if custom is not None and custom.get("_target_"):
        node = OmegaConf.create(OmegaConf.to_container(custom, resolve=True))
        name = node.get("name") or str(node._target_).rsplit(".", 1)[-1].lower()
        node.name = name
        configs[name] = node
    if not configs:
        raise AlposeError(
            "no acquirers configured; set acquirers=[random,coreset] or acquirer._target_=..."
        )
    return configs


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def config_differences(stored: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ (ignoring keys that may change, e.g. seeds or device)."""
    a = {k: v for k, v in _flatten(stored).items() if k.split(".")[0] not in FREE_KEYS}
    b = {k: v for k, v in _flatten(new).items() if k.split(".")[0] not in FREE_KEYS}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_or_store_config(root: Path, cfg: DictConfig, acquirers: dict[str, DictConfig]) -> None:
    """Refuse a result folder made with another config; otherwise (re)write the stored config."""
    from hourglass.io import atomic_path

    new = OmegaConf.to_container(cfg, resolve=True)
    new["acquirer_configs"] = {
        k: OmegaConf.to_container(v, resolve=True) for k, v in acquirers.items()
    }
    path = root / "config.yaml"
    if path.is_file() and bool(cfg.fresh):
        backup = root.with_name(f"{root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(root, backup)
        print(f"fresh=true: moved the previous results to {backup}")
    elif path.is_file():
        stored = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        shared = set(stored.get("acquirer_configs", {})) & set(new["acquirer_configs"])
        old = {**stored, "acquirer_configs": {k: stored["acquirer_configs"][k] for k in shared}}
        now = {**new, "acquirer_configs": {k: new["acquirer_configs"][k] for k in shared}}
        diff = config_differences(old, now)
        if diff:
            raise AlposeError(
                f"{root} holds results of a different config (differs in: {', '.join(diff)}); "
                "rerun with fresh=true to move them aside and start afresh, or set paths.runs elsewhere"
            )
        new["acquirer_configs"] = {**stored.get("acquirer_configs", {}), **new["acquirer_configs"]}
    with atomic_path(path) as tmp:
        OmegaConf.save(OmegaConf.create(new), tmp)


def load_data(cfg: DictConfig):
    """The dataset cache; a missing synthetic one is rendered first (deterministic and quick), a
    missing real one is built when its config says ``auto_prepare`` (small local sets), else the
    error names the ``alpose prepare ...`` command."""
    from hourglass.datasets.registry import cache_path, load_dataset
    from hourglass.datasets.synthetic_cache import write_synthetic_cache

    path = cache_path(cfg.dataset, cfg.paths.data)
    if cfg.dataset.name == "synthetic" and not path.is_file():
        print(f"rendering the synthetic set into {path} (once)")
        write_synthetic_cache(cfg.dataset, path, workers=2, progress=bool(cfg.progress))
    elif cfg.dataset.get("auto_prepare") and not path.is_file():
        from hourglass.datasets.real import prepare

        plain = OmegaConf.to_container(cfg.dataset, resolve=True)
        print(prepare(plain, cfg.paths.data, workers=2, progress=bool(cfg.progress)))
    return load_dataset(cfg.dataset, cfg.paths.data)


def build_experiment(cfg: DictConfig):
    """Data, model factory, training config and acquirers of a composed config."""
    from active.acquirers.registry import build_acquirer
    from active.experiment import Experiment
    from hourglass.train_cli import build_model, train_config

    data = load_data(cfg)
    acquirers = acquirer_configs(cfg)
    built = {name: build_acquirer(node) for name, node in acquirers.items()}
    root = Path(cfg.paths.runs) / str(cfg.name)

    def factory():
        return build_model(cfg.model, data.num_joints, data.image_size)

    factory()  # fail early on a model that does not fit the input size
    return Experiment(cfg, data, factory, train_config(cfg), built, root), acquirers


def _worker(cfg_yaml: str, task: tuple[str, int], threads: int) -> tuple[str, int]:
    """One job in a worker process: a seed's initial cycle or an (acquirer, seed) cell."""
    import torch

    torch.set_num_threads(threads)
    cfg = OmegaConf.create(cfg_yaml)
    cfg.progress = False
    experiment, _ = build_experiment(cfg)
    name, seed = task
    if name == "":
        experiment.run_initial(seed)
    else:
        experiment.run_cell(name, seed)
    return task


def run_experiment(cfg: DictConfig) -> Path:
    """Run (or resume) every cell; returns the experiment's result folder."""
    import torch

    experiment, acquirers = build_experiment(cfg)
    root = experiment.root
    check_or_store_config(root, cfg, acquirers)
    seeds = [int(s) for s in cfg.seeds]
    names = list(acquirers)
    jobs = max(1, int(cfg.jobs))
    print(
        f"alpose run: experiment '{cfg.name}', acquirers {names}, seeds {seeds}, "
        f"budgets {experiment.plan.budgets}, protocol {experiment.protocol.name}, "
        f"{jobs} job(s), results in {root}"
    )
    t0 = time.perf_counter()
    phases = [[("", s) for s in seeds], [(n, s) for s in seeds for n in names]]
    if jobs == 1:
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        for phase in phases:
            for name, seed in phase:
                if name:
                    print(f"  {name} seed {seed}", flush=True)
                    experiment.run_cell(name, seed)
                else:
                    experiment.run_initial(seed)
    else:
        threads = int(cfg.get("threads") or max(1, (os.cpu_count() or 2) // jobs))
        cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            for phase in phases:
                for name, seed in pool.map(
                    _worker, [cfg_yaml] * len(phase), phase, [threads] * len(phase)
                ):
                    if name:
                        print(f"  done: {name} seed {seed}", flush=True)
    print(
        f"finished in {(time.perf_counter() - t0) / 60:.1f} min; `alpose table {root}` summarises it"
    )
    return root


def main(argv: Sequence[str]) -> int:
    """``alpose run [overrides]``; returns the exit status."""
    from hourglass.hydra_app import run_hydra

    return run_hydra("run", "run", argv, run_experiment)
