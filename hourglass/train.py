"""Fit a stacked hourglass on given crop indices (anchor.md 4; the optimiser is fresh every call).

Adam (paper lr 3e-4, batch 16), ReduceLROnPlateau on the selection loss (factor 0.5, patience 5,
cooldown 2, min 3e-6), a fixed number of epochs, and the best epoch picked on a given index set.
Cold start (model as given) or warm start (``init_state``). Auxiliary heads (Learning Loss) train
beside the pose net on its detached outputs, so their loss never reaches it (stop-gradient).
Deterministic by seed on CPU; bf16 autocast on CUDA. Speed options (``train.*``): the batch
augmentation path on the device (``augment.path=batch``, ``augment_batch.py``), channels-last,
``torch.compile`` (``reduce-overhead`` = CUDA graphs), bf16 on the CPU; ``fit(checkpoint=PATH)``
saves every epoch atomically and resumes from that file (``epoch_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hourglass.augment import AugmentConfig, PoseAugmenter
from hourglass.augment_batch import BatchAugmenter, check_path, device_batch
from hourglass.datasets.cache import PoseCache
from hourglass.datasets.views import model_batch, target_joints
from hourglass.device import autocast, compile_model, mark_step, resolve_device
from hourglass.errors import AlposeError
from hourglass.evaluate import decode_coords, headline, images_to_tensor, iterate_outputs, score
from hourglass.heatmaps import gaussian_targets, image_to_heatmap
from hourglass.io import save_torch
from hourglass.losses import LossKind, per_sample_loss
from hourglass.model import PoseOutput


@dataclass
class TrainConfig:
    """Training hyper-parameters (``train.*`` in the config). Defaults are the paper's."""

    epochs: int = 100
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    loss: LossKind = "mse"
    sigma: float = 1.75
    peak: float = 30.0
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_cooldown: int = 2
    min_lr: float = 3e-6
    select_by: str = "loss"  # "loss" (anchor) or "pckh" (standard PCKh mean on the selection set)
    decode: str = "parabola"
    eval_batch_size: int = 64
    device: str = "auto"
    amp: bool = True
    amp_cpu: bool = False  # bf16 autocast on the CPU too (slow without bf16 units; tests)
    channels_last: bool = True
    compile: str = "off"  # off | default | reduce-overhead (CUDA graphs) | max-autotune
    compile_backend: str = "inductor"
    epoch_checkpoint: bool = False  # the experiment passes fit a per-cycle checkpoint path
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class AuxBatch:
    """What a batch offers an auxiliary loss besides the per-sample pose loss (all detached).

    output: the pose net's :class:`PoseOutput`; targets (B, J, H, W) and has_target (B, J): the
    ground-truth heatmaps the pose loss used (aleatoric and VL4Pose need them).
    """

    output: PoseOutput
    targets: Tensor
    has_target: Tensor


@dataclass
class AuxiliaryHead:
    """A module trained beside the pose net (e.g. a Learning-Loss head).

    ``module`` receives the pose net's detached :class:`PoseOutput`; ``loss(prediction,
    per_sample_pose_loss)`` returns a scalar (``loss(prediction, per_sample_pose_loss, AuxBatch)``
    when ``with_batch``). Its parameters join Adam as a further group, whose learning rate decays
    with the pose net's unless ``decay_lr`` is false (the anchor's never decays, anchor.md B14).
    """

    name: str
    module: nn.Module
    loss: Callable[..., Tensor]
    weight: float = 1.0
    with_batch: bool = False
    decay_lr: bool = True

    def compute_loss(self, sample_loss: Tensor, batch: AuxBatch) -> Tensor:
        """The head's loss on one batch (inputs detached: stop-gradient into the pose net)."""
        prediction = self.module(batch.output)
        if self.with_batch:
            return self.loss(prediction, sample_loss, batch)
        return self.loss(prediction, sample_loss)


@dataclass
class EpochLog:
    """One row of the training history."""

    epoch: int
    train_loss: float
    select_loss: float
    select_pckh: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    """Outcome of :func:`fit`; the model passed in holds the best epoch's weights."""

    best_epoch: int
    best_state: dict[str, Tensor]
    aux_states: dict[str, dict[str, Tensor]]
    history: list[EpochLog]
    seconds: float


class NonFiniteLossError(AlposeError):
    """The loss became NaN/inf; the model was restored to the last good weights."""

    def __init__(self, epoch: int, step: int, kept_epoch: int) -> None:
        kept = f"epoch {kept_epoch}" if kept_epoch > 0 else "the starting weights"
        super().__init__(
            f"loss became NaN/inf in epoch {epoch} (step {step}); kept the last good weights "
            f"({kept}). Lower train.lr or check the labels."
        )
        self.epoch, self.step, self.kept_epoch = epoch, step, kept_epoch


def _state(module: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of a state dict (a snapshot that later steps cannot change)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def make_batch(
    data: PoseCache, idx: np.ndarray, augmenter: PoseAugmenter | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gather (and augment) crops: images (B,S,S,3) uint8, joints (B,J,2), visibility (B,J).

    The one cropping path is ``hourglass.datasets.views.model_batch``.
    """
    return model_batch(data, idx, augmenter)


def batch_targets(
    joints: np.ndarray,
    vis: np.ndarray,
    image_size: int,
    heatmap_size: int,
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Gaussian targets for a batch: occluded joints get targets, absent ones do not (anchor 2.5)."""
    xy = image_to_heatmap(torch.from_numpy(joints).float().to(device), image_size, heatmap_size)
    present = torch.from_numpy(vis >= 0).to(device)
    return gaussian_targets(xy, present, heatmap_size, cfg.sigma, cfg.peak)


def eval_losses(
    out: PoseOutput, data: PoseCache, idx: np.ndarray, cfg: TrainConfig, device: torch.device
) -> Tensor:
    """Per-image pose loss (B,) of an un-augmented batch ``idx``, with training's targets."""
    vis = data.visibility[idx]
    targets, has_target = batch_targets(
        target_joints(data, data.joints[idx], vis),
        vis,
        data.image_size,
        out.heatmaps.shape[-1],
        cfg,
        device,
    )
    return per_sample_loss(out.heatmaps, targets, has_target, cfg.loss)


def _forward_loss(
    model: nn.Module,
    data: PoseCache,
    idx: np.ndarray,
    augmenter: PoseAugmenter | BatchAugmenter | None,
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[Tensor, PoseOutput, Tensor, Tensor]:
    """Per-sample pose loss (B,), the model output and the targets (with has_target) of a batch."""
    if isinstance(augmenter, BatchAugmenter):
        x, joints, vis = device_batch(data, idx, augmenter, device)
    else:
        images, joints, vis = make_batch(data, idx, augmenter)
        x = images_to_tensor(images, device)
    if not cfg.channels_last:
        x = x.contiguous()
    mark_step(cfg.compile if device.type == "cuda" else "off")
    with autocast(device, cfg.amp, cpu=cfg.amp_cpu):
        out = model(x)
    targets, has_target = batch_targets(
        joints, vis, data.image_size, out.heatmaps.shape[-1], cfg, device
    )
    return per_sample_loss(out.heatmaps, targets, has_target, cfg.loss), out, targets, has_target


@torch.no_grad()
def selection_metrics(
    model: nn.Module, data: PoseCache, indices: np.ndarray, cfg: TrainConfig, device: torch.device
) -> tuple[float, float]:
    """(mean pose loss, standard PCKh mean) on ``indices`` without augmentation, in one pass."""
    total, coords = 0.0, []
    for idx, out in iterate_outputs(
        model, data, indices, batch_size=cfg.eval_batch_size, device=device
    ):
        total += float(eval_losses(out, data, idx, cfg, device).sum())
        coords.append(decode_coords(out, cfg.loss, cfg.decode, data.image_size))
    pckh = score(data, indices, np.concatenate(coords))["standard"]
    model.train()
    return total / max(len(indices), 1), headline(pckh)


def fit(
    model: nn.Module,
    data: PoseCache,
    train_indices: Sequence[int] | np.ndarray,
    select_indices: Sequence[int] | np.ndarray,
    cfg: TrainConfig,
    *,
    init_state: dict[str, Tensor] | None = None,
    aux_heads: Sequence[AuxiliaryHead] = (),
    progress: bool = True,
    on_epoch: Callable[[EpochLog], None] | None = None,
    checkpoint: str | Path | None = None,
) -> FitResult:
    """Train ``model`` on ``train_indices``; keep the epoch best on ``select_indices``.

    Returns the best weights (also loaded into ``model``) and the per-epoch history. Raises
    :class:`NonFiniteLossError` on a NaN/inf loss after restoring the last good weights. With
    ``checkpoint``, every finished epoch is saved there (atomic) and a matching file found at the
    start is resumed from, so a killed fit ends with the same weights as an uninterrupted one.
    """
    start_time = time.perf_counter()
    device = resolve_device(cfg.device)
    train_indices = np.asarray(train_indices, dtype=np.int64)
    select_indices = np.asarray(select_indices, dtype=np.int64)
    if len(train_indices) == 0:
        raise AlposeError("no training images: the labelled set is empty")
    if len(select_indices) == 0:
        raise AlposeError("no images to select the best epoch on: the selection set is empty")
    torch.manual_seed(cfg.seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device).to(memory_format=layout).train()
    net = compile_model(model, cfg.compile, cfg.compile_backend)
    for head in aux_heads:
        head.module.to(device).train()
    groups = [{"params": list(model.parameters())}]
    groups += [{"params": list(h.module.parameters())} for h in aux_heads]
    optimiser = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser,
        mode="min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        cooldown=cfg.plateau_cooldown,
        min_lr=[cfg.min_lr] + [cfg.min_lr if h.decay_lr else cfg.lr for h in aux_heads],
    )
    batch_path = check_path(cfg.augment.path) == "batch"
    augmenter = BatchAugmenter(cfg.augment) if batch_path else PoseAugmenter(cfg.augment)
    drop_last = len(train_indices) >= cfg.batch_size
    best = (math.inf, 0)  # (selection criterion, epoch); lower is better
    best_state, aux_states = _state(model), {h.name: _state(h.module) for h in aux_heads}
    history: list[EpochLog] = []
    key = _resume_key(cfg, train_indices, select_indices, aux_heads)
    first, earlier_seconds = 1, 0.0
    saved = _load_epoch(checkpoint, key)
    if saved is not None:
        model.load_state_dict(saved["model"])
        for head in aux_heads:
            head.module.load_state_dict(saved["aux"][head.name])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        best = (float(saved["best_criterion"]), int(saved["best_epoch"]))
        best_state, aux_states = saved["best_state"], saved["best_aux"]
        history = [EpochLog(**h) for h in saved["history"]]
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        first, earlier_seconds = int(saved["epoch"]) + 1, float(saved["seconds"])
    bar = tqdm(
        range(first, cfg.epochs + 1),
        desc="train",
        unit="ep",
        initial=first - 1,
        total=cfg.epochs,
        disable=not progress,
        leave=False,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(train_indices)
        augmenter.reseed(cfg.seed * 1_000_003 + epoch)
        n_batches = (
            len(order) // cfg.batch_size if drop_last else math.ceil(len(order) / cfg.batch_size)
        )
        running = torch.zeros((), device=device)
        for step in range(n_batches):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            sample_loss, out, targets, has_target = _forward_loss(
                net, data, idx, augmenter, cfg, device
            )
            loss = sample_loss.mean()
            if aux_heads:
                batch = AuxBatch(out.detach(), targets, has_target)
                for head in aux_heads:
                    loss = loss + head.weight * head.compute_loss(sample_loss.detach(), batch)
            if not torch.isfinite(loss):
                model.load_state_dict(best_state)
                for head in aux_heads:
                    head.module.load_state_dict(aux_states[head.name])
                raise NonFiniteLossError(epoch, step, best[1])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += sample_loss.detach().mean()
        select_loss, select_pckh = selection_metrics(model, data, select_indices, cfg, device)
        if not math.isfinite(select_loss):
            model.load_state_dict(best_state)
            raise NonFiniteLossError(epoch, n_batches, best[1])
        scheduler.step(select_loss)
        criterion = select_loss if cfg.select_by == "loss" else -select_pckh
        if criterion < best[0]:
            best = (criterion, epoch)
            best_state = _state(model)
            aux_states = {h.name: _state(h.module) for h in aux_heads}
        log = EpochLog(
            epoch,
            float(running) / max(n_batches, 1),
            select_loss,
            select_pckh,
            optimiser.param_groups[0]["lr"],
            time.perf_counter() - t0,
        )
        history.append(log)
        bar.set_postfix(
            loss=f"{log.train_loss:.4g}", val=f"{select_loss:.4g}", pckh=f"{select_pckh:.1f}"
        )
        if checkpoint is not None:
            save_torch(
                checkpoint,
                {
                    "key": key,
                    "epoch": epoch,
                    "model": _state(model),
                    "aux": {h.name: _state(h.module) for h in aux_heads},
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_criterion": float(best[0]),
                    "best_epoch": best[1],
                    "best_state": best_state,
                    "best_aux": aux_states,
                    "history": [dataclasses.asdict(h) for h in history],
                    "seconds": earlier_seconds + time.perf_counter() - start_time,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                },
            )
        if on_epoch is not None:
            on_epoch(log)
    model.load_state_dict(best_state)
    for head in aux_heads:
        head.module.load_state_dict(aux_states[head.name])
    seconds = earlier_seconds + time.perf_counter() - start_time
    return FitResult(best[1], best_state, aux_states, history, seconds)


def _resume_key(
    cfg: TrainConfig, train: np.ndarray, select: np.ndarray, heads: Sequence[AuxiliaryHead]
) -> str:
    """What an epoch checkpoint must match to be resumed: the data, the seed and the optimiser."""
    h = hashlib.sha256(np.ascontiguousarray(train).tobytes())
    h.update(np.ascontiguousarray(select).tobytes())
    fields = (cfg.seed, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.loss, cfg.augment)
    h.update(repr((fields, [x.name for x in heads])).encode())
    return h.hexdigest()


def _load_epoch(path: str | Path | None, key: str) -> dict | None:
    """The epoch checkpoint at ``path`` if it exists and belongs to this fit (same key)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file (e.g. a kill mid-copy on a non-atomic filesystem)
        print(
            f"warning: epoch checkpoint {path} is unreadable ({type(exc).__name__}); "
            "this cycle starts from its first epoch",
            file=sys.stderr,
        )
        return None
    return saved if isinstance(saved, dict) and saved.get("key") == key else None


def time_training(
    model: nn.Module,
    data: PoseCache,
    indices: Sequence[int] | np.ndarray,
    cfg: TrainConfig,
    steps: int,
    warmup: int = 1,
) -> float:
    """Training images/s of :func:`fit`'s step (data path, forward, loss, backward, Adam) over
    ``steps`` batches of ``cfg.batch_size`` drawn from ``indices``, after ``warmup`` untimed steps."""
    device = resolve_device(cfg.device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device).to(memory_format=layout).train()
    net = compile_model(model, cfg.compile, cfg.compile_backend)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch_path = check_path(cfg.augment.path) == "batch"
    augmenter = BatchAugmenter(cfg.augment) if batch_path else PoseAugmenter(cfg.augment)
    augmenter.reseed(cfg.seed)
    order = np.resize(
        np.random.default_rng(cfg.seed).permutation(indices), (warmup + steps) * cfg.batch_size
    )
    t0 = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        sample_loss = _forward_loss(net, data, idx, augmenter, cfg, device)[0]
        optimiser.zero_grad(set_to_none=True)
        sample_loss.mean().backward()
        optimiser.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)
