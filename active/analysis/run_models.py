"""A finished run's models, rebuilt for analysis: which checkpoint, its config, data and losses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from active.loop.run_files import INITIAL, load_state
from active.loop.runner import load_data
from hourglass.errors import AlposeError
from hourglass.evaluate import iterate_outputs
from hourglass.factories import build_model
from hourglass.train import eval_losses


@dataclass(frozen=True)
class Checkpoint:
    """Which model of an experiment is analysed."""

    path: Path
    acquirer: str
    seed: int
    cycle: int


def load_run_config(run_dir: Path):
    """The resolved config an ``alpose run`` experiment stored; clear errors when it is missing."""
    if not run_dir.is_dir():
        raise AlposeError(
            f"run folder not found: {run_dir} (give an `alpose run` result folder, runs/<name>, "
            "or --k and --theta)"
        )
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise AlposeError(f"{run_dir} has no config.yaml; is it an `alpose run` result folder?")
    return OmegaConf.load(path)


def _seeds(folder: Path) -> list[int]:
    found = (re.fullmatch(r"seed_(\d+)", p.name) for p in folder.glob("seed_*"))
    return sorted(int(m.group(1)) for m in found if m)


def find_checkpoint(
    run_dir: Path, acquirer: str | None, seed: int | None, cycle: int | None
) -> Checkpoint:
    """The checkpoint of (acquirer, seed, cycle); defaults: random or the first, the smallest seed,
    the last finished cycle. Cycle 0 is the seed's shared initial model (``_initial``)."""
    names = sorted(
        p.name for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    if acquirer is None:
        acquirer = "random" if "random" in names else (names[0] if names else INITIAL)
    folder = run_dir / acquirer
    if not folder.is_dir():
        raise AlposeError(
            f"no results of acquirer '{acquirer}' in {run_dir}; found: {', '.join(names) or 'none'}"
        )
    seeds = _seeds(folder)
    if seed is None:
        if not seeds:
            raise AlposeError(f"{folder} holds no seed_<s> folders; has the run started?")
        seed = seeds[0]
    seed_folder = folder / f"seed_{seed}"
    if cycle is None:
        cycle = load_state(seed_folder).cycle
        if cycle < 0:
            raise AlposeError(
                f"{seed_folder} has no finished cycle (see `alpose status {run_dir}`)"
            )
    owner = run_dir / INITIAL / f"seed_{seed}" if cycle == 0 else seed_folder
    path = owner / "checkpoints" / f"cycle_{cycle}.pt"
    if not path.is_file():
        have = sorted(
            int(m.group(1))
            for p in (seed_folder / "checkpoints").glob("cycle_*.pt")
            if (m := re.fullmatch(r"cycle_(\d+)\.pt", p.name))
        )
        raise AlposeError(
            f"checkpoint not found: {path} (acquirer {acquirer}, seed {seed}, cycle {cycle}; "
            f"checkpoints there: cycles {have or 'none'}; seeds: {seeds or 'none'})"
        )
    return Checkpoint(path, acquirer, seed, cycle)


def true_losses(model, data, indices: np.ndarray, train_cfg, device) -> np.ndarray:
    """The pose loss of every image in ``indices`` (no augmentation), with the targets and loss
    of training's selection pass (``hourglass.train.selection_metrics``), per image."""
    out_losses = []
    with torch.no_grad():
        for idx, out in iterate_outputs(
            model, data, indices, batch_size=train_cfg.eval_batch_size, device=device
        ):
            out_losses.append(eval_losses(out, data, idx, train_cfg, device))
    return torch.cat(out_losses).double().cpu().numpy() if out_losses else np.zeros(0)


@dataclass
class RunModel:
    """A run's model at one cycle, with the data and config it was trained with."""

    model: Any
    data: Any
    cfg: Any
    checkpoint: Checkpoint


def load_run_model(
    run_dir: Path,
    acquirer: str | None = None,
    seed: int | None = None,
    cycle: int | None = None,
    data_dir: str | Path | None = None,
) -> RunModel:
    """Rebuild the model of (acquirer, seed, cycle) from the run's stored config and its
    weights-only checkpoint, and load the dataset the run used (:func:`active.loop.runner.load_data`)."""
    cfg = load_run_config(run_dir)
    ckpt = find_checkpoint(run_dir, acquirer, seed, cycle)
    if data_dir:
        cfg.paths.data = str(data_dir)
    cfg.progress = False
    data = load_data(cfg)
    model = build_model(cfg.model, data.num_joints, data.image_size)
    state = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise AlposeError(f"{ckpt.path} is not an `alpose run` checkpoint (no 'model' entry)")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise AlposeError(
            f"{ckpt.path} does not fit the model in {run_dir / 'config.yaml'}: "
            f"{str(err).splitlines()[0]}"
        ) from err
    return RunModel(model, data, cfg, ckpt)
