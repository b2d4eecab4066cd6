"""The config stored in an experiment's folder: what may change between runs, what may not.

A result folder whose stored config differs from the new one is refused, naming the differing keys
and ``fresh=true``; settings that do not change the numbers (device, seeds, jobs, ...) may change,
and a changed environment is recorded with one warning line. The stored config is the run's
identity: a folder that holds cells (``<acquirer>/seed_<s>/state.json``) but whose ``config.yaml``
is missing or unreadable is refused rather than given the new config. Every number of the new
config is checked (:mod:`active.loop.validate`) before anything is stored.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from active.acquirers.registry import acquirer_config
from active.loop.threads import runs_on_cuda, worker_threads
from active.loop.validate import check_run_config
from hourglass.environment import changes, describe
from hourglass.errors import AlposeError
from hourglass.io import atomic_path

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
    "seed",
    "logger",
    "dry_run",
    "bench",
    "acquirer_settings",  # compared through acquirer_configs, where they end up
    "table",  # how `alpose table` tests, not what was run
    "environment",  # what computed the cells: compared on its own, a warning (run_environment)
    "environment_history",
}
# Keys added after results were first stored, at the value that reproduces the old behaviour: a
# stored config without the key counts as having this value (older result folders stay usable).
ADDED_DEFAULTS = {
    "train.amp_cpu": False,
    "train.augment.path": "sample",
    "train.channels_last": True,
    "train.compile": "off",
    "train.compile_backend": "inductor",
    "train.deterministic": False,
    "train.epoch_checkpoint": False,
    "numerics": "native",
}
# Settings that change speed, memory or crash-safety but not the numbers, and where a real set's
# photos are read from (like paths.data: its cache is named by the settings, not the folder).
FREE_DOTTED_KEYS = {
    "train.epoch_checkpoint",
    "train.prefetch",
    "dataset.in_memory",
    "dataset.root",
    "dataset.lspet",
}
AUGMENT_PATH = "train.augment.path"  # compared as resolved for the device: auto = sample on a CPU
_MAIN = "ALPOSE_RUN_MAIN"  # host:pid of the `alpose run` process, to tell launcher workers apart


def acquirer_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """Name -> acquirer config: ``acquirers=[...]`` names plus an inline ``acquirer._target_=...``."""
    configs = {str(name): acquirer_config(str(name)) for name in cfg.acquirers}
    for name, settings in (cfg.get("acquirer_settings") or {}).items():
        if str(name) in configs:  # e.g. acquirer_settings.egl_pp.pool_subsample=1000
            configs[str(name)] = OmegaConf.merge(configs[str(name)], settings)
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

    def kept(flat: dict) -> dict:
        return {
            k: v
            for k, v in flat.items()
            if k.split(".")[0] not in FREE_KEYS and k not in FREE_DOTTED_KEYS
        }

    a, b = kept({**ADDED_DEFAULTS, **_flatten(stored)}), kept(_flatten(new))
    on_cuda = runs_on_cuda(str(new.get("device", "auto")))
    for flat in (a, b):
        if flat.get(AUGMENT_PATH) == "auto":
            flat[AUGMENT_PATH] = "batch" if on_cuda else "sample"
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


CONFIG = "config.yaml"
_RESTORE = (
    "restore it (from a backup or another copy of the results), or rerun with fresh=true to move "
    "the results aside and start afresh"
)


def stored_cells(root: Path) -> list[Path]:
    """The cells' ``state.json`` files under a result folder (``_initial`` and every acquirer)."""
    return sorted(Path(root).glob("*/seed_*/state.json"))


def read_stored_config(root: Path) -> dict | None:
    """The stored ``config.yaml`` of a result folder as plain data; None when there is none. A
    file that cannot be read or parsed into a mapping is refused in one line naming it."""
    path = Path(root) / CONFIG
    if not path.exists():
        return None
    try:
        stored = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:  # YAML parser, OSError, interpolation and OmegaConf errors alike
        reason = " ".join(str(err).split())[:200]
        raise AlposeError(
            f"{path} is not a readable config ({type(err).__name__}: {reason}); it is the stored "
            f"config of the results in {root}: {_RESTORE}"
        ) from err
    if not isinstance(stored, dict):
        raise AlposeError(
            f"{path} is not a config (it holds a {type(stored).__name__}, not a mapping); it is "
            f"the stored config of the results in {root}: {_RESTORE}"
        )
    return stored


def new_config(cfg: DictConfig, acquirers: dict[str, DictConfig]) -> dict:
    """The config a run would store: ``cfg`` resolved, with its acquirers' merged configs."""
    new = OmegaConf.to_container(cfg, resolve=True)
    new["acquirer_configs"] = {
        k: OmegaConf.to_container(v, resolve=True) for k, v in acquirers.items()
    }
    return new


def stored_and_new(
    root: Path, cfg: DictConfig, acquirers: dict[str, DictConfig]
) -> tuple[dict | None, dict]:
    """(the stored config or None, the new one); an unreadable stored config is refused."""
    return read_stored_config(root), new_config(cfg, acquirers)


def _refuse_missing_config(root: Path, cells: list[Path]) -> None:
    shown = ", ".join(str(p.relative_to(root)) for p in cells[:3])
    more = f" and {len(cells) - 3} more" if len(cells) > 3 else ""
    raise AlposeError(
        f"{root} holds finished cells ({shown}{more}) but no {CONFIG}: the stored config is the "
        f"identity of those results and cannot be taken from the new command; restore "
        f"{root / CONFIG}, or rerun with fresh=true to move the results aside and start afresh"
    )


def stored_config_differences(stored: dict, new: dict) -> list[str]:
    """Keys in which ``new`` differs from a stored config (acquirers compared where shared)."""
    shared = set(stored.get("acquirer_configs", {})) & set(new["acquirer_configs"])
    old = {**stored, "acquirer_configs": {k: stored["acquirer_configs"][k] for k in shared}}
    now = {**new, "acquirer_configs": {k: new["acquirer_configs"][k] for k in shared}}
    return config_differences(old, now)


def _union(a: object, b: object) -> list:
    return list(dict.fromkeys([*(a or []), *(b or [])]))


def check_or_store_config(root: Path, cfg: DictConfig, acquirers: dict[str, DictConfig]) -> None:
    """Refuse a result folder made with another config; otherwise (re)write the stored config.

    The stored config gathers the acquirers and seeds of every run so far (the jobs of a sweep each
    name one); call it under the folder's lock when jobs run in parallel (``run_experiment`` does).
    Every number of ``cfg`` is checked first (:func:`check_run_config`), and a folder with cells
    but no readable ``config.yaml`` is refused (``fresh=true`` moves it aside instead).
    """
    check_run_config(cfg, acquirers)
    cells = stored_cells(root)
    if bool(cfg.fresh) and ((root / CONFIG).exists() or cells):
        stored = None
        backup = root.with_name(f"{root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(root, backup)
        print(f"fresh=true: moved the previous results to {backup}")
    else:
        stored = read_stored_config(root)
        if stored is None and cells:
            _refuse_missing_config(root, cells)
    new = new_config(cfg, acquirers)
    new["environment"] = run_environment(cfg)
    if stored is not None:
        diff = stored_config_differences(stored, new)
        if diff:
            raise AlposeError(
                f"{root} holds results of a different config (differs in: {', '.join(diff)}); "
                "rerun with fresh=true to move them aside and start afresh, or set paths.runs elsewhere"
            )
        new["acquirer_configs"] = {**stored.get("acquirer_configs", {}), **new["acquirer_configs"]}
        new["acquirers"] = _union(stored.get("acquirers"), new.get("acquirers"))
        new["seeds"] = sorted(_union(stored.get("seeds"), new.get("seeds")))
        new["environment_history"] = _environment_history(root, stored, new["environment"])
    with atomic_path(root / CONFIG) as tmp:
        OmegaConf.save(OmegaConf.create(new), tmp)


def run_environment(cfg: DictConfig) -> dict:
    """The environment this run's cells compute in (``hourglass/environment.py``): with
    ``jobs=N`` the workers' thread count, else this process's."""
    threads = worker_threads(cfg) if int(cfg.get("jobs") or 1) > 1 else torch.get_num_threads()
    device = str(cfg.device)  # as the cells get it (a claimed GPU is cuda:<i> by now)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return describe(str(cfg.get("numerics", "native")), threads, device)


def _environment_history(root: Path, stored: dict, now: dict) -> list[dict]:
    """Earlier environments of this result folder; one warning line when ``now`` differs from the
    last one (cells computed before and after may differ in their last digits)."""
    history = list(stored.get("environment_history") or [])
    before = stored.get("environment")
    if before is None:  # stored before environments were recorded
        print(f"warning: {root} has no record of the environment of its earlier cells")
        return history
    diff = changes(before, now)
    if diff:
        shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
        print(f"warning: resuming {root} in a different environment than before: {shown}")
        history.append(before)
    return history
