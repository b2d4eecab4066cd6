"""The acquisition-cycle loop: every (acquirer, seed) cell of an experiment, resumable at any moment.

Pairing by construction: for seed ``s`` the initial labelled set and the initial weights depend on
``s`` alone, and cycle 0 (training on the initial set) is trained once per seed, in
``_initial/seed_<s>/``, and shared by every acquirer. Each later cycle: select with the previous
cycle's model, train (warm or cold start by protocol), evaluate both PCKh conventions per joint,
save. Every write is atomic and ``state.json`` is written last, so a run killed at any moment
resumes from its last finished cycle and, on CPU, ends with the same numbers. ``state.json`` also
records the sha256 of every checkpoint the cell wrote; on resume a checkpoint that is missing or
differs sends the cell back to redo that cycle (and the ones after it).

Auxiliary heads (acquirers with ``auxiliary_head``, see ``acquirers/base.py``): in cycles >= 1 the
head trains beside the pose net in the same ``fit`` (stop-gradient), is saved in the cycle's
checkpoint (``{"model": ..., "aux": {name: state}}``) and starts the next cycle from there whenever
the pose net does (warm start; a cold start re-initialises both). Cycle 0's pose model is shared,
so its head is trained afterwards on that frozen model (``head_pass.py``) and saved alone in the
cell's ``checkpoints/cycle_0.pt``; that pass's time counts as cycle 1's acquisition time.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from active.acquirers.base import AcquisitionContext
from active.acquirers.registry import inference_amp
from active.loop.head_training import fit_head_frozen
from active.loop.run_files import (
    INITIAL,
    CellState,
    acquisition_seconds,
    budget_schedule,
    checkpoint_cycle,
    first_damage,
    load_state,
    read_picks,
    read_rows,
    remove_stale_temporaries,
    save_state,
    seed_dir,
    warn_retraining,
    well_formed,
    write_rows,
)
from active.loop.sweep import FINISHED, file_lock, record, run_initial_once
from active.loop.tracking import NullTracker, Tracker
from hourglass.datasets.cache import PoseCache
from hourglass.device import resolve_device
from hourglass.errors import AlposeError
from hourglass.evaluate import headline, predict_coords, score
from hourglass.io import atomic_path, kill_point, save_torch, sha256_file
from hourglass.train import AuxiliaryHead, FitResult, TrainConfig, fit

# Seed-stream tags, so that the streams of one seed never collide.
_INITIAL_SET, _HOLDOUT, _ACQUIRE, _SUBSAMPLE = 11, 13, 17, 19


def offered_pool(
    pool: np.ndarray, labelled: np.ndarray, seed: int, cycle: int, subsample: int | None
) -> tuple[np.ndarray, np.random.Generator]:
    """The unlabelled rows an acquirer is offered in ``cycle`` (a seeded subset of ``subsample``
    rows when set) and its seeded generator; the one definition the runner and the report share."""
    unlabelled = np.setdiff1d(pool, labelled)
    rng = np.random.default_rng([seed, _ACQUIRE, cycle])
    if subsample and len(unlabelled) > subsample:
        sub_rng = np.random.default_rng([seed, _SUBSAMPLE, cycle])
        unlabelled = np.sort(sub_rng.choice(unlabelled, int(subsample), replace=False))
    return unlabelled, rng


def pool_subsample_of(acquirer: Any, experiment_wide: int | None) -> int | None:
    """The pool subsample an acquirer scores: its own (config key ``pool_subsample``) or the run's."""
    own = getattr(acquirer, "pool_subsample", None)
    return int(own) if own else experiment_wide


@dataclass
class TrainingProtocol:
    """How cycles train and where they are judged (``protocol.*``; docs/conventions.md 8).

    paper: warm start, best epoch chosen on the report split and reported there (the anchor, B7).
    standard: cold or warm start, best epoch chosen on a fixed held-out slice of the labelled data,
    reported on the untouched report split.
    """

    name: str = "standard"
    warm_start: bool = False
    selection: str = "holdout"  # "holdout" (slice of the labelled set) or a split name
    holdout_fraction: float = 0.2
    report_split: str = "test"


@dataclass
class Plan:
    """The schedule of one experiment: labelled budgets per cycle and epochs."""

    budgets: list[int]
    epochs_first: int
    epochs_later: int
    pool_subsample: int | None = None
    initial_family: str | None = None  # draw the initial set only from pool rows of this family

    @property
    def cycles(self) -> int:
        return len(self.budgets)


def plan_from_config(cfg: DictConfig, pool_size: int) -> Plan:
    """Budgets (explicit list, or initial + k per cycle) checked against the pool before training."""
    if cfg.budgets is None:
        for key, low, what in (
            ("initial", 1, "persons labelled at cycle 0"),
            ("per_cycle", 1, "images added per acquisition cycle"),
            ("cycles", 0, "acquisition cycles"),
        ):
            value = cfg.get(key)
            if isinstance(value, int) and value < low:
                raise AlposeError(
                    f"{key}={value}: the number of {what} must be at least {low}; "
                    f"set {key}= to a positive integer (or give budgets=[...])"
                )
    budgets = budget_schedule(cfg.budgets, cfg.initial, cfg.per_cycle, cfg.cycles)
    if budgets is None:
        raise AlposeError("set either budgets=[...] or initial, per_cycle and cycles (integers)")
    if any(b <= 0 for b in budgets) or any(
        b2 <= b1 for b1, b2 in zip(budgets, budgets[1:], strict=False)
    ):
        raise AlposeError(
            "budgets must be positive and strictly increasing (every cycle adds images), "
            f"got {budgets}; fix budgets=[...]"
        )
    if budgets[-1] > pool_size:
        raise AlposeError(
            f"the last budget ({budgets[-1]} persons) is larger than the unlabelled pool "
            f"({pool_size} persons); lower the budgets or use a larger training split"
        )
    sub = cfg.get("pool_subsample")
    family = cfg.get("initial_family")
    return Plan(
        budgets,
        int(cfg.epochs_first),
        int(cfg.epochs_later),
        int(sub) if sub else None,
        str(family) if family else None,
    )


def initial_candidates(data: PoseCache, pool: np.ndarray, family: str | None) -> np.ndarray:
    """Pool rows the initial set is drawn from: all, or those of one ``family`` (the anchor's LSP
    protocol starts from exactly the 1000 LSP training images, family ``lsp``)."""
    if family is None:
        return pool
    if data.family is None or family not in data.family_names:
        known = ", ".join(data.family_names) or "none"
        raise AlposeError(
            f"initial_family={family}: this dataset has no such family (families: {known})"
        )
    return pool[data.family[pool] == data.family_names.index(family)]


def initial_labelled(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The seed's initial labelled set: ``n`` pool rows drawn uniformly (depends on seed alone)."""
    if n > len(pool):
        raise AlposeError(
            f"the initial set needs {n} persons but only {len(pool)} are eligible; "
            "lower `initial` (or drop initial_family)"
        )
    return np.sort(np.random.default_rng([seed, _INITIAL_SET]).choice(pool, n, replace=False))


def split_holdout(
    labelled: np.ndarray, seed: int, fraction: float, pool_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, selection) parts of ``labelled``: a fixed per-row coin (by seed), so a row never moves."""
    keys = np.random.default_rng([seed, _HOLDOUT]).random(pool_size)
    held = keys[labelled] < fraction
    if held.all() or not held.any():  # tiny sets: keep at least one row on each side
        held = np.zeros(len(labelled), bool)
        held[np.argmin(keys[labelled])] = True
    return labelled[~held], labelled[held]


def model_seed(seed: int) -> int:
    """Torch seed of a seed's initial weights (shared by every acquirer and every cold start)."""
    return 1_000_003 * seed + 7


def train_seed(seed: int, cycle: int) -> int:
    """Seed of cycle ``cycle``'s data order and augmentation."""
    return 10_007 * seed + cycle


def epoch_path(folder: Path, cycle: int) -> Path:
    """The per-epoch resume file of a cycle (``train.epoch_checkpoint``); gone once the cycle is stored."""
    return folder / "checkpoints" / f"cycle_{cycle}.epoch.pt"


def head_seed(seed: int) -> int:
    """Torch seed of an auxiliary head's initial weights (every cold start of the seed's head)."""
    return 1_000_003 * seed + 29


def has_aux_head(acquirer: Any) -> bool:
    """Whether ``acquirer`` scores with an auxiliary head it wants trained beside the pose net."""
    return callable(getattr(acquirer, "auxiliary_head", None))


class Experiment:
    """One experiment: its config, data, model factory and result folder."""

    def __init__(
        self,
        cfg: DictConfig,
        data: PoseCache,
        build_model: Callable[[], torch.nn.Module],
        train_cfg: TrainConfig,
        acquirers: dict[str, Any],
        root: Path,
    ) -> None:
        self.cfg, self.data, self.build_model, self.train_cfg = cfg, data, build_model, train_cfg
        self.acquirers, self.root = acquirers, root
        self.protocol = TrainingProtocol(**OmegaConf.to_container(cfg.protocol, resolve=True))
        self.pool = data.indices("train")
        self.plan = plan_from_config(cfg, len(self.pool))
        self.initial_pool = initial_candidates(data, self.pool, self.plan.initial_family)
        initial_labelled(self.initial_pool, self.plan.budgets[0], 0)  # refuse before training
        self.report_idx = data.indices(self.protocol.report_split)
        self.device = resolve_device(str(cfg.device))
        self.progress = bool(cfg.progress)
        self.tracker: Tracker = NullTracker()  # the runner sets one per job (logger=...)
        # cell name (acquirer or _initial) -> identity of the config that makes it; the runner
        # sets it (active.loop.cell_identity), and a cell made by another config is refused
        self.identities: dict[str, str] = {}

    # -- one cycle -------------------------------------------------------------------------
    def _selection_indices(self, labelled: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        p = self.protocol
        if p.selection == "holdout":
            return split_holdout(labelled, seed, p.holdout_fraction, len(self.data))
        return labelled, self.data.indices(p.selection)

    def _fresh_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(model_seed(seed))
        return self.build_model()

    def _fresh_head(self, acquirer: Any, model: torch.nn.Module, seed: int) -> AuxiliaryHead:
        torch.manual_seed(head_seed(seed))
        return acquirer.auxiliary_head(model, self.data, self.protocol.name)

    def train_cycle(
        self,
        seed: int,
        cycle: int,
        labelled: np.ndarray,
        previous: Path | None,
        acquirer: Any = None,
        previous_aux: Path | None = None,
        epoch_file: Path | None = None,
    ) -> tuple[torch.nn.Module, FitResult, AuxiliaryHead | None]:
        """Train cycle ``cycle`` on ``labelled`` (warm from ``previous`` when the protocol says so).

        An acquirer with an auxiliary head gets it trained alongside (warm from ``previous_aux``,
        default ``previous``, whenever the pose net is warm); the head is returned trained.
        """
        model = self._fresh_model(seed)
        head = self._fresh_head(acquirer, model, seed) if has_aux_head(acquirer) else None
        init = None
        if previous is not None and self.protocol.warm_start:
            init = torch.load(previous, map_location="cpu", weights_only=True)["model"]
            if head is not None:
                aux = torch.load(previous_aux or previous, map_location="cpu", weights_only=True)
                head.module.load_state_dict(aux["aux"][head.name])
        train_idx, select_idx = self._selection_indices(labelled, seed)
        epochs = self.plan.epochs_first if cycle == 0 else self.plan.epochs_later
        tcfg = dataclasses.replace(self.train_cfg, epochs=epochs, seed=train_seed(seed, cycle))
        result = fit(
            model,
            self.data,
            train_idx,
            select_idx,
            tcfg,
            init_state=init,
            aux_heads=[head] if head is not None else [],
            progress=self.progress,
            on_epoch=lambda log: self._epoch_done(seed, cycle, log),
            checkpoint=epoch_file if self.train_cfg.epoch_checkpoint else None,
        )
        return model, result, head

    def _epoch_done(self, seed: int, cycle: int, log: Any) -> None:
        self.tracker.epoch(seed, cycle, log)
        kill_point("train")  # test-only fault injection (hourglass/io.py)

    def resume_state(self, folder: Path, seed: int) -> CellState:
        """The cell's state, sent back before its first cycle whose files do not check out (a
        checkpoint, a ``metrics.csv`` row or a selection that is missing, malformed or not the
        one ``state.json`` recorded): that cycle and the later ones are redone, with one warning."""
        state = load_state(folder)
        last = self.plan.cycles - 1
        damage = first_damage(folder, state, last)
        if damage is None:
            return state
        cycle, why = damage
        if cycle > last:  # counted cycles beyond the plan; everything up to its end checks out
            print(f"warning: {why}; counting it as finished at cycle {last}", file=sys.stderr)
            return dataclasses.replace(state, cycle=last)
        warn_retraining(why, cycle)
        if cycle == 0:
            return CellState(config=state.config)
        picks = [read_picks(folder, c) for c in range(1, cycle + 1)]
        initial = initial_labelled(self.initial_pool, self.plan.budgets[0], seed)
        labelled = np.unique(np.concatenate([initial, *picks]))
        return CellState(
            cycle - 1,
            labelled.tolist(),
            acquisition_seconds(folder / "metrics.csv", cycle),
            {k: v for k, v in state.checkpoints.items() if checkpoint_cycle(k) < cycle},
            {k: v for k, v in state.rows.items() if int(k) < cycle},
            {k: v for k, v in state.selections.items() if checkpoint_cycle(k) <= cycle},
            state.config,
        )

    def check_identity(self, folder: Path, state: CellState, name: str) -> None:
        """Refuse a started cell whose ``state.json`` records another config than this run's."""
        want = self.identities.get(name)
        if want and state.config and state.cycle >= 0 and state.config != want:
            raise AlposeError(
                f"{folder} was made by another config than this run's (state.json records config "
                f"{state.config[:12]}, this run's is {want[:12]}); rerun with the config that made "
                "it, move the folder aside, or start afresh with fresh=true"
            )

    def initial_head(
        self, acquirer: Any, model: torch.nn.Module, seed: int, labelled: np.ndarray, folder: Path
    ) -> tuple[AuxiliaryHead, str]:
        """Train ``acquirer``'s head on the frozen shared cycle-0 model; save it in ``folder``.

        Returns the head and the sha256 of its checkpoint."""
        head = self._fresh_head(acquirer, model, seed)
        train_idx, _ = self._selection_indices(labelled, seed)
        epochs = getattr(acquirer, "head_epochs", None) or self.plan.epochs_later
        tcfg = dataclasses.replace(self.train_cfg, seed=train_seed(seed, 0))
        state = fit_head_frozen(model, head, self.data, train_idx, tcfg, int(epochs))
        head.module.load_state_dict(state)
        digest = save_torch(folder / "checkpoints" / "cycle_0.pt", {"aux": {head.name: state}})
        return head, digest

    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        """Both conventions, per joint, on the report split."""
        coords = predict_coords(
            model,
            self.data,
            self.report_idx,
            loss=self.train_cfg.loss,
            decode_method=self.train_cfg.decode,
            device=self.device,
        )
        results = score(self.data, self.report_idx, coords)
        row: dict[str, Any] = {"pckh_standard": headline(results["standard"])}
        paper = results.get("paper", results["standard"])
        row["pckh_paper"] = headline(paper)
        for conv, res in (("standard", results["standard"]), ("paper", paper)):
            row.update(
                {
                    f"{conv}_{j}": float(v)
                    for j, v in zip(res.joint_names, res.per_joint, strict=True)
                }
            )
        return row

    def _row(
        self, cycle: int, labelled: int, result: FitResult, metrics: dict, acq_seconds: float
    ) -> dict:
        return {
            "cycle": cycle,
            "labelled": labelled,
            **{k: metrics[k] for k in ("pckh_standard", "pckh_paper")},
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "train_seconds": round(result.seconds, 3),
            "acquisition_seconds": round(acq_seconds, 3),
            **{k: v for k, v in metrics.items() if k not in ("pckh_standard", "pckh_paper")},
        }

    # -- cells -----------------------------------------------------------------------------
    def run_initial(self, seed: int) -> None:
        """Cycle 0 of ``seed`` (shared by every acquirer); skipped when done and intact.

        Call it under the seed's cycle-0 lock (:func:`active.loop.sweep.run_initial_once`)."""
        folder = seed_dir(self.root.parent, self.root.name, INITIAL, seed)
        state = load_state(folder)
        self.check_identity(folder, state, INITIAL)
        damage = first_damage(folder, state, 0) if state.cycle >= 0 else None
        if state.cycle >= 0 and damage is None:
            return
        if damage is not None:
            warn_retraining(damage[1], 0)
        remove_stale_temporaries(folder)
        labelled = initial_labelled(self.initial_pool, self.plan.budgets[0], seed)
        model, result, _ = self.train_cycle(
            seed, 0, labelled, None, epoch_file=epoch_path(folder, 0)
        )
        row = self._row(0, len(labelled), result, self.evaluate(model), 0.0)
        digest = save_torch(folder / "checkpoints" / "cycle_0.pt", {"model": result.best_state})
        epoch_path(folder, 0).unlink(missing_ok=True)
        rows = write_rows(folder / "metrics.csv", [row], self.data.joint_names)
        checkpoints = {"checkpoints/cycle_0.pt": digest}
        identity = self.identities.get(INITIAL, "")
        save_state(folder, CellState(0, labelled.tolist(), 0.0, checkpoints, rows, {}, identity))

    def initial_done(self, seed: int) -> bool:
        """Whether ``seed``'s shared cycle 0 is finished and its files check out."""
        folder = seed_dir(self.root.parent, self.root.name, INITIAL, seed)
        state = load_state(folder)
        return state.cycle >= 0 and first_damage(folder, state, 0) is None

    def run_cell(self, name: str, seed: int) -> None:
        """All cycles of (acquirer ``name``, ``seed``), from its last finished cycle on, under the
        cell's lock (``<acquirer>/seed_<s>.lock``): a second process on the same cell waits, with
        one line, and then finds it done."""
        folder = seed_dir(self.root.parent, self.root.name, name, seed)
        with file_lock(folder.with_name(f"{folder.name}.lock"), f"{name} seed {seed}") as handle:
            self._run_cell(name, seed, folder, handle)

    def _run_cell(self, name: str, seed: int, folder: Path, lock: IO[str]) -> None:
        initial = seed_dir(self.root.parent, self.root.name, INITIAL, seed)
        loaded = load_state(folder)
        self.check_identity(folder, loaded, name)
        state = self.resume_state(folder, seed)
        if state != loaded and state.cycle >= 0:
            save_state(folder, state)  # the repaired resume point, before any file is rewritten
        remove_stale_temporaries(folder)  # the lock holder is the folder's only writer
        rows = [
            r
            for r in read_rows(folder / "metrics.csv")
            if well_formed(r) and int(r["cycle"]) <= state.cycle
        ]
        acquirer = self.acquirers[name]
        checkpoints, selections = dict(state.checkpoints), dict(state.selections)
        for cycle in range(state.cycle + 1, self.plan.cycles):
            head, head_seconds = None, 0.0
            if cycle == 0:
                run_initial_once(self, seed)
                rows = read_rows(initial / "metrics.csv")
                labelled = np.asarray(load_state(initial).labelled, np.int64)
                checkpoint = initial / "checkpoints" / "cycle_0.pt"
                model = self._fresh_model(seed)
                model.load_state_dict(
                    torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
                )
                if has_aux_head(acquirer) and self.plan.cycles > 1:
                    t0 = time.perf_counter()
                    head, checkpoints["checkpoints/cycle_0.pt"] = self.initial_head(
                        acquirer, model, seed, labelled, folder
                    )
                    head_seconds = time.perf_counter() - t0
            else:
                labelled = np.asarray(state.labelled, np.int64)
                previous = folder / "checkpoints" / f"cycle_{cycle - 1}.pt"
                previous_aux = None
                if cycle == 1:
                    previous, previous_aux = initial / "checkpoints" / "cycle_0.pt", previous
                    if self.protocol.warm_start:
                        run_initial_once(self, seed)  # retrains it if its files went bad
                model, result, head = self.train_cycle(
                    seed,
                    cycle,
                    labelled,
                    previous,
                    acquirer,
                    previous_aux,
                    epoch_path(folder, cycle),
                )
                rows.append(
                    self._row(
                        cycle,
                        len(labelled),
                        result,
                        self.evaluate(model),
                        state.acquisition_seconds,
                    )
                )
                checkpoint = {"model": result.best_state}
                if head is not None:
                    checkpoint["aux"] = result.aux_states
                stored = f"checkpoints/cycle_{cycle}.pt"
                checkpoints[stored] = save_torch(folder / stored, checkpoint)
                epoch_path(folder, cycle).unlink(missing_ok=True)
            next_labelled, seconds = labelled, 0.0
            if cycle + 1 < self.plan.cycles:
                k = self.plan.budgets[cycle + 1] - self.plan.budgets[cycle]
                aux_module = head.module if head is not None else None
                next_labelled, seconds = self.acquire(
                    acquirer, model, labelled, seed, cycle + 1, k, folder, aux_module
                )
                seconds += head_seconds
                name_ = f"selections/cycle_{cycle + 1}.npy"
                selections[name_] = sha256_file(folder / name_)
            digests = write_rows(folder / "metrics.csv", rows, self.data.joint_names)
            state = CellState(
                cycle,
                np.asarray(next_labelled).tolist(),
                seconds,
                dict(checkpoints),
                digests,
                dict(selections),
                self.identities.get(name, ""),
            )
            save_state(folder, state)
            record(lock, f"{FINISHED} {cycle} of {name} seed {seed}")
            self.tracker.cycle_done(folder, cycle)

    def acquire(
        self,
        acquirer: Any,
        model: torch.nn.Module,
        labelled: np.ndarray,
        seed: int,
        cycle: int,
        k: int,
        folder: Path,
        aux_head: torch.nn.Module | None = None,
    ) -> tuple[np.ndarray, float]:
        """Let the acquirer pick ``k`` new rows for ``cycle``; saves the picks and their scores."""
        t0 = time.perf_counter()
        sub = pool_subsample_of(acquirer, self.plan.pool_subsample)
        unlabelled, rng = offered_pool(self.pool, labelled, seed, cycle, sub)
        if k > len(unlabelled):
            raise AlposeError(
                f"cycle {cycle} needs {k} new persons but only {len(unlabelled)} are unlabelled"
            )
        ctx = AcquisitionContext.for_training(
            model,
            self.data,
            labelled,
            unlabelled,
            rng,
            self.device,
            self.train_cfg,
            aux_head,
            self.progress,
            self.protocol.name,
            amp=inference_amp(acquirer),
        )
        picks = np.asarray(acquirer.select(ctx, k), dtype=np.int64)
        kill_point("acquire")  # test-only fault injection (hourglass/io.py)
        check_picks(picks, unlabelled, k, type(acquirer).__name__)
        scores = np.asarray(getattr(acquirer, "last_scores", np.zeros(k)), dtype=np.float64)
        seconds = time.perf_counter() - t0
        with atomic_path(folder / "selections" / f"cycle_{cycle}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.rec.fromarrays([picks, scores[: len(picks)]], names="index,score"))
        return np.sort(np.concatenate([labelled, picks])), seconds


def check_picks(picks: np.ndarray, unlabelled: np.ndarray, k: int, who: str) -> None:
    """An acquirer must return ``k`` distinct unlabelled rows; anything else is its bug, named."""
    if len(picks) != k or len(np.unique(picks)) != k or not np.isin(picks, unlabelled).all():
        raise AlposeError(
            f"acquirer {who} returned {len(picks)} indices ({len(np.unique(picks))} distinct, "
            f"{int(np.isin(picks, unlabelled).sum())} unlabelled); it must return {k} distinct unlabelled indices"
        )
