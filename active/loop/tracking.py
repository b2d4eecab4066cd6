"""Experiment tracking for ``alpose run``: ``logger=none`` (default, no-op) or ``logger=wandb``.

One tracker per job, i.e. per (acquirer, seed) cell (``_initial`` for a seed's shared cycle 0 when
it runs as its own job). The wandb tracker logs every training epoch (``epoch/*``, stepped by
``epoch/step``), every finished cycle's metrics (``cycle/*``, stepped by ``cycle/labelled``), the
picked indices and their scores as a ``wandb.Table`` per cycle (``selection/cycle_<c>``) and, at the
end, the experiment's learning curves so far (``learning_curve``, drawn by ``tables.plot_curves``).
It writes offline unless ``WANDB_MODE`` (or ``logger.mode``) says otherwise; ``wandb`` is imported
only when asked for.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from omegaconf import DictConfig, OmegaConf

from active.loop.run_files import INITIAL, read_rows
from hourglass.errors import AlposeError
from hourglass.train import EpochLog

# Columns of metrics.csv logged per cycle (per-joint columns follow them).
# (run folder, png path) -> whether a figure was drawn; the analysis layer supplies it.
CurvePlotter = Callable[[Path, Path], bool]

CYCLE_KEYS = (
    "pckh_standard",
    "pckh_paper",
    "epochs",
    "best_epoch",
    "train_seconds",
    "acquisition_seconds",
)


class Tracker(Protocol):
    """What the cycle loop reports to; every method is optional work for a logger."""

    def epoch(self, seed: int, cycle: int, log: EpochLog) -> None:
        """One finished training epoch of ``cycle``."""

    def cycle_done(self, folder: Path, cycle: int) -> None:
        """``cycle`` of the cell in ``folder`` is saved (metrics.csv row, next selection)."""

    def finish(self) -> None:
        """The job is over (a no-op when already finished)."""


class NullTracker:
    """``logger=none``: records nothing."""

    def epoch(self, seed: int, cycle: int, log: EpochLog) -> None:
        pass

    def cycle_done(self, folder: Path, cycle: int) -> None:
        pass

    def finish(self) -> None:
        pass


def import_wandb() -> Any:
    """The ``wandb`` module, or an AlposeError that says how to install it."""
    try:
        import wandb  # optional dependency: pip install 'alpose[wandb]'
    except ImportError as err:
        raise AlposeError(
            "logger=wandb needs the wandb package: `pip install wandb` (or use logger=none)"
        ) from err
    return wandb


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def cycle_record(row: dict[str, str]) -> dict[str, float]:
    """One metrics.csv row as ``cycle/<column>`` numbers (empty cells left out)."""
    out = {}
    for key, text in row.items():
        value = _number(text)
        if value is not None:
            out[f"cycle/{key}"] = value
    return out


def selection_rows(folder: Path, cycle: int) -> list[list[Any]] | None:
    """[cycle, index, score] rows of ``selections/cycle_<cycle>.npy`` (None when absent)."""
    path = folder / "selections" / f"cycle_{cycle}.npy"
    if not path.is_file():
        return None
    picks = np.load(path)
    return [[cycle, int(i), float(s)] for i, s in zip(picks["index"], picks["score"], strict=True)]


class WandbTracker:
    """``logger=wandb``: one wandb run per job, grouped by experiment name."""

    def __init__(
        self,
        cfg: DictConfig,
        acquirer: str,
        seed: int,
        root: Path,
        curves: CurvePlotter | None = None,
    ) -> None:
        self.curves = curves
        wandb = import_wandb()
        log_cfg = cfg.logger
        mode = log_cfg.get("mode") or os.environ.get("WANDB_MODE") or "offline"
        os.environ["WANDB_MODE"] = str(mode)  # the wandb service reads it too
        self.wandb, self.root = wandb, root
        out_dir = Path(str(log_cfg.get("dir") or root))
        out_dir.mkdir(parents=True, exist_ok=True)
        job = "initial" if acquirer == INITIAL else acquirer
        try:
            self.run = wandb.init(
                project=str(log_cfg.get("project") or "alpose"),
                entity=log_cfg.get("entity") or None,
                group=str(cfg.name),
                job_type=job,
                name=f"{cfg.name}-{job}-seed{seed}",
                tags=[str(t) for t in (log_cfg.get("tags") or [])],
                config={
                    **OmegaConf.to_container(cfg, resolve=True),
                    "cell": {"acquirer": acquirer, "seed": seed},
                },
                dir=str(out_dir),
                mode=str(mode),
                settings=wandb.Settings(console="off", quiet=True),
            )
        except Exception as err:  # wandb's own errors: login, network, bad mode
            raise AlposeError(
                f"wandb could not start ({' '.join(str(err).split())[:200]}); "
                "set WANDB_MODE=offline or use logger=none"
            ) from err
        self.run.define_metric("epoch/step")
        self.run.define_metric("epoch/*", step_metric="epoch/step")
        self.run.define_metric("cycle/labelled")
        self.run.define_metric("cycle/*", step_metric="cycle/labelled")
        self.log_epochs = bool(log_cfg.get("log_epochs", True))
        self.steps = 0
        self.finished = False
        if acquirer != INITIAL:  # a resumed cell: its finished cycles first, so the curve is whole
            folder = root / acquirer / f"seed_{seed}"
            for row in read_rows(folder / "metrics.csv"):
                self._log_cycle(folder, int(row["cycle"]), row)

    def epoch(self, seed: int, cycle: int, log: EpochLog) -> None:
        if not self.log_epochs:
            return
        self.steps += 1
        record = {f"epoch/{k}": v for k, v in vars(log).items() if _number(v) is not None}
        self.run.log({**record, "epoch/step": self.steps, "epoch/cycle": cycle})

    def cycle_done(self, folder: Path, cycle: int) -> None:
        rows = [r for r in read_rows(folder / "metrics.csv") if int(r["cycle"]) == cycle]
        if rows:
            self._log_cycle(folder, cycle, rows[-1])

    def _log_cycle(self, folder: Path, cycle: int, row: dict[str, str]) -> None:
        record: dict[str, Any] = cycle_record(row)
        picks = selection_rows(folder, cycle + 1)  # the picks this cycle's model made
        if picks is not None:
            table = self.wandb.Table(columns=["cycle", "index", "score"], data=picks)
            record[f"selection/cycle_{cycle + 1}"] = table
        self.run.log(record)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / "curves.png"
                if self.curves is not None and self.curves(self.root, png):
                    self.run.log({"learning_curve": self.wandb.Image(str(png))})
        except (
            AlposeError,
            OSError,
            ValueError,
        ) as err:  # the results stay; only the image is lost
            print(f"warning: learning curve not logged to wandb: {err}")
        finally:
            self.run.finish()


def make_tracker(
    cfg: DictConfig, acquirer: str, seed: int, root: Path, curves: CurvePlotter | None = None
) -> Tracker:
    """The tracker ``cfg.logger`` names, for the job (``acquirer``, ``seed``); ``curves`` draws the
    learning curves it logs at the end (none: no figure)."""
    node = cfg.get("logger")
    name = str(node.get("name")) if node is not None else "none"
    if name in ("none", "None"):
        return NullTracker()
    if name == "wandb":
        return WandbTracker(cfg, acquirer, seed, root, curves)
    raise AlposeError(f"unknown logger '{name}'; use logger=none or logger=wandb")
