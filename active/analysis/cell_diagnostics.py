"""Does an acquirer's score find the model's failures? One extra inference pass per cycle.

For (acquirer, seed, cycle) the model that made the picks (cycle c-1's checkpoint; cycle 1: the
seed's shared initial model) is run once over the whole training split (the pool, labelled or
not): predicted joints give each row's **true error** (mean over scored joints of the joint
distance divided by the row's normaliser: head diagonal for MPII, torso for LSP), the pooled
embedding gives the 2D PCA map. The acquirer's **priority** (its score, negated where it wants the
lowest, e.g. VL4Pose's likelihood) comes from ``selections/cycle_<c>.npy`` for the picks, and for
the whole offered pool by calling the acquirer's own ``scores(ctx, rows)`` again on that model
(acquirers that rank every row; ``rescore_max_diff`` says how far the re-computed scores of the
picks lie from the stored ones). Numbers per cell (:class:`ScoreRow`):

* ``spearman_pool``: Spearman ρ of priority and true error over the offered pool, "how well the
  score finds failures" (1: ranks exactly by error, 0: no better than chance);
* ``spearman_picks``: the same among the picks, from the stored scores alone (core-set too);
* ``error_lift``: mean true error of the picks / of the offered pool (random ≈ 1);
* ``hit_rate``: share of the picks among the offered pool's k largest true errors
  (random ≈ ``k / pool``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from active.acquirers.base import AcquisitionContext
from active.acquirers.registry import acquirer_config, inference_amp
from active.acquirers.registry import build_acquirer as build
from active.analysis import run_diagnostics
from active.analysis.run_models import find_checkpoint, load_run_config
from active.loop.experiment import has_aux_head, pool_subsample_of
from active.loop.experiment import offered_pool as runner_pool
from active.loop.runner import load_data
from hourglass.device import resolve_device
from hourglass.errors import AlposeError
from hourglass.evaluate import decode_coords, iterate_outputs
from hourglass.factories import build_model, train_config
from hourglass.metrics import normalised_distances

ROLES = ("labelled", "selected", "unlabelled")


@dataclass
class PoolPass:
    """One inference pass of a model over the training split (rows sorted)."""

    rows: np.ndarray  # (N,) cache rows
    coords: np.ndarray  # (N, J, 2) predicted joints, crop pixels
    error: np.ndarray  # (N,) true per-sample error (mean normalised joint distance)
    embedding: np.ndarray  # (N, C) pooled features


@dataclass
class OpenRun:
    """An experiment opened for diagnostics: its config, data, training settings and device."""

    run_dir: Path
    cfg: Any
    data: Any
    train_cfg: Any
    device: Any
    pool: np.ndarray  # the training split: every row the experiment may label
    passes: dict[str, PoolPass] = field(default_factory=dict)  # checkpoint path -> pass

    @property
    def protocol(self) -> str:
        return str(self.cfg.protocol.name)


def open_run(run_dir: Path, data_dir: str | Path | None = None, device: str = "auto") -> OpenRun:
    """Load an ``alpose run`` experiment's config and dataset (``run_cli.load_data``)."""
    cfg = load_run_config(Path(run_dir))
    if data_dir:
        cfg.paths.data = str(data_dir)
    cfg.progress = False
    if cfg.get("seed") is None:  # `run` keeps no single seed; the train config wants one
        cfg.seed = 0
    data = load_data(cfg)
    return OpenRun(
        Path(run_dir), cfg, data, train_config(cfg), resolve_device(device), data.indices("train")
    )


def per_sample_error(data: Any, rows: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(N,) mean over scored joints (visibility >= 0) of |pred - gt| / normaliser."""
    d = normalised_distances(coords, data.joints[rows], data.normaliser[rows])
    scored = data.visibility[rows] >= 0
    with np.errstate(invalid="ignore"):
        total = np.where(scored, d, 0.0).sum(1)
        return total / np.maximum(scored.sum(1), 1)


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def selecting_model(run: OpenRun, acquirer: str, seed: int, cycle: int):
    """(model, checkpoint path, aux head states or None) that picked cycle ``cycle``'s rows."""
    if cycle < 1:
        raise AlposeError(f"cycle {cycle} has no picks; acquisition cycles start at 1")
    ckpt = find_checkpoint(run.run_dir, acquirer, seed, cycle - 1)
    model = build_model(run.cfg.model, run.data.num_joints, run.data.image_size)
    model.load_state_dict(_state(ckpt.path)["model"])
    own = run.run_dir / acquirer / f"seed_{seed}" / "checkpoints" / f"cycle_{cycle - 1}.pt"
    aux = _state(own).get("aux") if own.is_file() else None
    return model.to(run.device), ckpt.path, aux


def pool_pass(run: OpenRun, model: Any, key: str) -> PoolPass:
    """Predicted joints, true errors and embeddings of every training row (cached by ``key``)."""
    if key in run.passes:
        return run.passes[key]
    rows = np.sort(run.pool)
    coords, emb = [], []
    for _, out in iterate_outputs(
        model, run.data, rows, batch_size=run.train_cfg.eval_batch_size, device=run.device
    ):
        coords.append(
            decode_coords(out, run.train_cfg.loss, run.train_cfg.decode, run.data.image_size)
        )
        emb.append(out.embedding.float().cpu().numpy())
    coords_a = np.concatenate(coords).astype(np.float64)
    result = PoolPass(
        rows, coords_a, per_sample_error(run.data, rows, coords_a), np.concatenate(emb)
    )
    if len(run.passes) >= 2:  # keep memory bounded: a report walks cells seed by seed
        run.passes.pop(next(iter(run.passes)))
    run.passes[key] = result
    return result


def offered_pool(
    run: OpenRun, labelled: np.ndarray, seed: int, cycle: int, acquirer: Any = None
) -> tuple[np.ndarray, np.random.Generator]:
    """The unlabelled rows the acquirer was offered and its rng, as ``Experiment.acquire`` made them."""
    sub = pool_subsample_of(acquirer, run.cfg.get("pool_subsample"))
    return runner_pool(run.pool, labelled, seed, cycle, sub)


def build_acquirer(run: OpenRun, name: str, **overrides: Any) -> Any:
    """The acquirer object as the run configured it (``acquirer_configs`` in config.yaml; the
    registry's config when the run has none), with ``overrides`` on top."""
    stored = run.cfg.get("acquirer_configs") or {}
    node = stored.get(name)
    node = node if node is not None else acquirer_config(name)
    return build({**OmegaConf.to_container(node, resolve=True), **overrides})


def orientation(stored: np.ndarray, acquirer: Any) -> float:
    """+1 when the acquirer ranks high scores first, -1 when it ranks the lowest first (priority
    sign), read from the order it stored its picks in: most wanted first, as ``select`` returns
    them. Where that order cannot tell (fewer than two distinct scores), a
    :class:`~active.acquirers.base.RankingAcquirer`'s ``highest`` decides, else +1."""
    s = np.asarray(stored, np.float64)
    rho = spearman(np.arange(len(s)), s)
    if np.isfinite(rho) and rho != 0:
        return 1.0 if rho < 0 else -1.0
    return 1.0 if getattr(acquirer, "highest", True) else -1.0


def rescore(
    run: OpenRun,
    acquirer: Any,
    model: Any,
    aux: dict | None,
    labelled: np.ndarray,
    offered: np.ndarray,
    rng: np.random.Generator,
    seed: int,
) -> np.ndarray | None:
    """The acquirer's own scores of every offered row (None when it does not rank rows)."""
    if not callable(getattr(acquirer, "scores", None)):
        return None
    head = None
    if has_aux_head(acquirer):
        if not aux:
            return None
        head = acquirer.auxiliary_head(model, run.data, run.protocol)
        head.module.load_state_dict(aux[head.name])
        head = head.module
    ctx = AcquisitionContext.for_training(
        model,
        run.data,
        labelled,
        offered,
        rng,
        run.device,
        run.train_cfg,
        head,
        False,
        run.protocol,
        amp=inference_amp(acquirer),
    )
    return np.asarray(acquirer.scores(ctx, offered), np.float64)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ over the finite pairs (nan with fewer than 3 or a constant side)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def hit_rate(picks: np.ndarray, offered: np.ndarray, error: np.ndarray) -> float:
    """Share of ``picks`` among the ``len(picks)`` offered rows with the largest ``error``
    (``error`` aligned with ``offered``; ties: lower row first)."""
    k = len(picks)
    if k == 0:
        return float("nan")
    order = np.argsort(-np.nan_to_num(error, nan=-np.inf), kind="stable")[:k]
    return float(np.isin(picks, offered[order]).sum() / k)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, 2) projection on the two leading principal axes (signs fixed: largest loading > 0)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    out = centred @ (axes * signs[:, None]).T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


@dataclass(frozen=True)
class ScoreRow:
    """How well one cycle's acquisition found the model's failures (see the module docstring)."""

    acquirer: str
    seed: int
    cycle: int
    pool: int  # rows offered
    picked: int
    ranked: bool  # the whole offered pool has scores (re-computed)
    spearman_pool: float
    spearman_picks: float
    mean_error_pool: float
    mean_error_picks: float
    error_lift: float
    hit_rate: float
    hit_rate_random: float  # k / pool, what uniform picks score on average
    rescore_max_diff: float  # max |re-computed - stored| score over the picks (nan: not re-scored)
    acquisition_seconds: float


@dataclass
class CellDiagnostics:
    """Everything one (acquirer, seed, cycle) yields: the summary row and per-row arrays."""

    row: ScoreRow
    rows: np.ndarray  # (N,) training rows, sorted
    role: np.ndarray  # (N,) "labelled" / "selected" / "unlabelled"
    offered: np.ndarray  # (N,) bool: offered to the acquirer
    error: np.ndarray  # (N,) true error under the selecting model
    priority: np.ndarray  # (N,) oriented score (nan where unknown)
    pca: np.ndarray  # (N, 2)
    coords: np.ndarray  # (N, J, 2) predicted joints
    picks: np.ndarray  # picked rows in the acquirer's order
    pick_priority: np.ndarray  # their stored, oriented scores

    def samples(self, family: np.ndarray | None, family_names: tuple[str, ...]) -> list[dict]:
        """Per-row records for ``samples/*.csv``."""
        fam = (
            [family_names[f] for f in family[self.rows]]
            if family is not None
            else [""] * len(self.rows)
        )
        return [
            {
                "index": int(r),
                "role": str(role),
                "offered": int(off),
                "family": f,
                "error": float(e),
                "priority": float(p),
                "pca_x": float(x),
                "pca_y": float(y),
            }
            for r, role, off, f, e, p, (x, y) in zip(
                self.rows,
                self.role,
                self.offered,
                fam,
                self.error,
                self.priority,
                self.pca,
                strict=True,
            )
        ]


SAMPLE_FIELDS = ("index", "role", "offered", "family", "error", "priority", "pca_x", "pca_y")


def diagnose(
    run: OpenRun, acquirer: str, seed: int, cycle: int, rescore_pool: bool = True
) -> CellDiagnostics:
    """The pass-based diagnostics of one cell (one inference pass, plus the acquirer's own scoring
    of the offered pool when ``rescore_pool`` and it ranks rows)."""
    picks, stored = run_diagnostics.load_selection(run.run_dir, acquirer, seed, cycle)
    labelled = run_diagnostics.labelled_before(run.run_dir, acquirer, seed, cycle)
    model, ckpt_path, aux = selecting_model(run, acquirer, seed, cycle)
    p = pool_pass(run, model, str(ckpt_path))
    acq = build_acquirer(run, acquirer)
    offered, rng = offered_pool(run, labelled, seed, cycle, acq)
    sign = orientation(stored, acq)
    pos = np.searchsorted(p.rows, offered)
    pick_pos = np.searchsorted(p.rows, picks)
    priority = np.full(len(p.rows), np.nan)
    scores = rescore(run, acq, model, aux, labelled, offered, rng, seed) if rescore_pool else None
    max_diff = float("nan")
    if scores is not None:
        priority[pos] = sign * scores
        in_offered = np.searchsorted(offered, picks)
        max_diff = float(np.max(np.abs(scores[in_offered] - stored))) if len(picks) else 0.0
    priority[pick_pos] = sign * stored  # the picks keep the scores they were chosen with
    role = np.full(len(p.rows), "unlabelled", dtype=object)
    role[np.searchsorted(p.rows, labelled)] = "labelled"
    role[pick_pos] = "selected"
    is_offered = np.zeros(len(p.rows), bool)
    is_offered[pos] = True
    e_off, e_pick = p.error[pos], p.error[pick_pos]
    timing = {
        r.cycle: r for r in run_diagnostics.timing_rows(run.run_dir, [acquirer]) if r.seed == seed
    }
    row = ScoreRow(
        acquirer=acquirer,
        seed=seed,
        cycle=cycle,
        pool=len(offered),
        picked=len(picks),
        ranked=scores is not None,
        spearman_pool=spearman(priority[pos], e_off) if scores is not None else float("nan"),
        spearman_picks=spearman(sign * stored, e_pick),
        mean_error_pool=float(np.nanmean(e_off)) if len(e_off) else float("nan"),
        mean_error_picks=float(np.nanmean(e_pick)) if len(e_pick) else float("nan"),
        error_lift=float(np.nanmean(e_pick) / np.nanmean(e_off))
        if len(e_off) and len(e_pick)
        else float("nan"),
        hit_rate=hit_rate(picks, offered, e_off),
        hit_rate_random=len(picks) / max(1, len(offered)),
        rescore_max_diff=max_diff,
        acquisition_seconds=timing[cycle].acquisition_seconds if cycle in timing else float("nan"),
    )
    return CellDiagnostics(
        row,
        p.rows,
        role,
        is_offered,
        p.error,
        priority,
        pca_2d(p.embedding),
        p.coords,
        picks,
        sign * stored,
    )


def write_samples(run: OpenRun, cell: CellDiagnostics, out_dir: Path) -> Path:
    """``samples/<acquirer>_seed<s>_cycle<c>.csv`` (one row per training row)."""
    r = cell.row
    path = out_dir / "samples" / f"{r.acquirer}_seed{r.seed}_cycle{r.cycle}.csv"
    records = cell.samples(run.data.family, tuple(run.data.family_names))
    return run_diagnostics.write_records(path, records, SAMPLE_FIELDS)
