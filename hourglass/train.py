"""Fit a stacked hourglass on given crop indices (docs/anchor.md 4; the optimiser is fresh every call).

Adam (paper lr 3e-4, batch 16), ReduceLROnPlateau on the selection loss (factor 0.5, patience 5,
cooldown 2, min 3e-6), a fixed number of epochs, and the best epoch picked on a given index set.
Cold start (model as given) or warm start (``init_state``). Auxiliary heads (Learning Loss) train
beside the pose net on its detached outputs, so their loss never reaches it (stop-gradient).
Deterministic by seed on CPU; bf16 autocast on CUDA. Speed options (``train.*``): the batch
augmentation path on the device (``augment.path``: ``auto`` = ``batch`` on CUDA, ``augment_batch.py``),
batches prepared ``prefetch`` steps ahead in a worker thread (``feeder.py``; the same batches),
channels-last, ``torch.compile`` (``reduce-overhead``/``max-autotune`` = CUDA graphs), cuDNN
autotuning or ``deterministic`` kernels (``device.configure``), bf16 on the CPU;
``fit(checkpoint=PATH)`` saves every epoch atomically and resumes from that file
(``epoch_checkpoint``). The step loop never waits for the device: the running loss and the first
non-finite step stay on it and are read once per epoch.
"""

from __future__ import annotations

import dataclasses
import functools
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
from hourglass.augment_batch import (
    BatchAugmenter,
    Staged,
    finish_batch,
    make_augmenter,
    resolve_path,
    stage_batch,
)
from hourglass.datasets.cache import PoseCache
from hourglass.datasets.views import model_batch, target_joints
from hourglass.device import autocast, compile_model, configure, mark_step, resolve_device
from hourglass.errors import AlposeError
from hourglass.evaluate import decode_xy, gathered, headline, iterate_outputs, score
from hourglass.feeder import Prefetcher, to_device
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
    prefetch: int = 2  # batches prepared ahead in a worker thread (0: inline); same numbers
    deterministic: bool = False  # CUDA: deterministic kernels (slower); false: cuDNN autotuning
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class AuxBatch:
    """What a batch offers an auxiliary loss besides the per-sample pose loss (all detached).

    output: the pose net's :class:`PoseOutput`; targets (B, J, H, W) and has_target (B, J): the
    ground-truth heatmaps the pose loss used (aleatoric and VL4Pose need them); visible (B, J)
    bool: the joints flagged visible (the anchor's Learning Loss counts them on LSP).
    """

    output: PoseOutput
    targets: Tensor
    has_target: Tensor
    visible: Tensor | None = None


@dataclass
class AuxiliaryHead:
    """A module trained beside the pose net (e.g. a Learning-Loss head).

    ``module`` receives the pose net's detached :class:`PoseOutput`; ``loss(prediction,
    per_sample_pose_loss)`` returns a scalar (``loss(prediction, per_sample_pose_loss, AuxBatch)``
    when ``with_batch``). Its parameters join Adam as a further group, whose learning rate decays
    with the pose net's unless ``decay_lr`` is false (the anchor's never decays, docs/anchor.md B14).
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


def target_maps(
    joints: Tensor, present: Tensor, image_size: int, heatmap_size: int, cfg: TrainConfig
) -> tuple[Tensor, Tensor]:
    """Gaussian targets of joints (B, J, 2) float in model-input pixels and present (B, J) bool,
    on their device: occluded joints get targets, absent ones do not (anchor 2.5)."""
    xy = image_to_heatmap(joints, image_size, heatmap_size)
    return gaussian_targets(xy, present, heatmap_size, cfg.sigma, cfg.peak)


def batch_targets(
    joints: np.ndarray,
    vis: np.ndarray,
    image_size: int,
    heatmap_size: int,
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Gaussian targets for a batch: occluded joints get targets, absent ones do not (anchor 2.5)."""
    xy = to_device(torch.from_numpy(np.ascontiguousarray(joints)).float(), device)
    present = to_device(np.ascontiguousarray(vis >= 0), device)
    return target_maps(xy, present, image_size, heatmap_size, cfg)


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
    model: nn.Module, staged: Staged, image_size: int, cfg: TrainConfig
) -> tuple[Tensor, PoseOutput, Tensor, Tensor]:
    """Per-sample pose loss (B,), the model output and the targets (with has_target) of a batch."""
    x = finish_batch(staged)
    if not cfg.channels_last:
        x = x.contiguous()
    mark_step(cfg.compile if x.device.type == "cuda" else "off")
    with autocast(x.device, cfg.amp, cpu=cfg.amp_cpu):
        out = model(x)
    targets, has_target = target_maps(
        staged.joints, staged.present, image_size, out.heatmaps.shape[-1], cfg
    )
    return per_sample_loss(out.heatmaps, targets, has_target, cfg.loss), out, targets, has_target


@torch.no_grad()
def selection_metrics(
    model: nn.Module, data: PoseCache, indices: np.ndarray, cfg: TrainConfig, device: torch.device
) -> tuple[float, float]:
    """(mean pose loss, standard PCKh mean) on ``indices`` without augmentation, in one pass.

    Inference as training runs it (``train.amp``, ``prefetch``); the loss total and the
    coordinates are gathered on the device and read once.
    """
    indices = np.asarray(indices, dtype=np.int64)
    vis = data.visibility[indices]
    joints = torch.from_numpy(np.ascontiguousarray(target_joints(data, data.joints[indices], vis)))
    joints, present = to_device(joints.float(), device), to_device(vis >= 0, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    coords, start = [], 0
    for idx, out in iterate_outputs(
        model,
        data,
        indices,
        batch_size=cfg.eval_batch_size,
        device=device,
        amp=cfg.amp,
        amp_cpu=cfg.amp_cpu,
        prefetch=cfg.prefetch,
    ):
        rows = slice(start, start + len(idx))
        start += len(idx)
        heatmap_size = out.heatmaps.shape[-1]
        targets, has = target_maps(joints[rows], present[rows], data.image_size, heatmap_size, cfg)
        total += per_sample_loss(out.heatmaps, targets, has, cfg.loss).sum().double()
        coords.append(decode_xy(out, cfg.loss, cfg.decode, data.image_size))
    pckh = score(data, indices, gathered(coords, (0, data.num_joints, 2)))["standard"]
    model.train()
    return total.item() / max(len(indices), 1), headline(pckh)


def _restore(
    model: nn.Module,
    heads: Sequence[AuxiliaryHead],
    state: dict[str, Tensor],
    aux_states: dict[str, dict[str, Tensor]],
) -> None:
    """Load the kept weights back into the model and the auxiliary heads."""
    model.load_state_dict(state)
    for head in heads:
        head.module.load_state_dict(aux_states[head.name])


def _train_epoch(
    net: nn.Module,
    data: PoseCache,
    batches: list[np.ndarray],
    augmenter: PoseAugmenter | BatchAugmenter,
    optimiser: torch.optim.Optimizer,
    aux_heads: Sequence[AuxiliaryHead],
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[int, float]:
    """One pass over ``batches`` (row arrays, in order): (first non-finite step or -1, loss sum).

    No host sync per step: the finiteness of every step's loss and the running loss stay on the
    device and are read together once at the end.
    """
    running = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    stage = functools.partial(stage_batch, data, augmenter=augmenter, device=device)
    with Prefetcher(batches, stage, cfg.prefetch, device) as feed:
        for step, staged in enumerate(feed):
            sample_loss, out, targets, has_target = _forward_loss(net, staged, data.image_size, cfg)
            loss = sample_loss.mean()
            if aux_heads:
                batch = AuxBatch(out.detach(), targets, has_target, staged.visible)
                for head in aux_heads:
                    loss = loss + head.weight * head.compute_loss(sample_loss.detach(), batch)
            first_bad = torch.where(torch.isfinite(loss) | (first_bad >= 0), first_bad, step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += sample_loss.detach().mean()
    bad, total = torch.stack([first_bad.double(), running.double()]).tolist()
    return int(bad), total


def step_batches(order: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    """``order`` cut into the epoch's batches (a short last one only when not ``drop_last``)."""
    n = len(order) // batch_size if drop_last else math.ceil(len(order) / batch_size)
    return [order[step * batch_size : (step + 1) * batch_size] for step in range(n)]


def _cuda_rng(device: torch.device) -> Tensor | None:
    """The CUDA generator state of the job's own device for a checkpoint (None on the CPU)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _restore_cuda_rng(saved: Tensor | list | None, device: torch.device) -> None:
    """Set the job's CUDA generator from a checkpoint: one state (this format) or, from older
    checkpoints, a list over every GPU (this device's entry; skipped when there is none)."""
    if device.type != "cuda" or saved is None:
        return
    if isinstance(saved, (list, tuple)):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(saved):
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, device)


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over the weights per step and, on the CPU, an exactly
    rounded square root. The unfused path's ``Tensor.sqrt`` is not exactly rounded on the CPU and
    gave other last bits on an emulated Intel CPU than on this AMD one, so the same seed trained
    other weights there (docs/studies/2026-12-04-portable-numerics.md)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


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
    configure(device, cfg.deterministic)
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
    optimiser = adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser,
        mode="min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        cooldown=cfg.plateau_cooldown,
        min_lr=[cfg.min_lr] + [cfg.min_lr if h.decay_lr else cfg.lr for h in aux_heads],
    )
    augmenter = make_augmenter(cfg.augment, device)
    drop_last = len(train_indices) >= cfg.batch_size
    best = (math.inf, 0)  # (selection criterion, epoch); lower is better
    best_state, aux_states = _state(model), {h.name: _state(h.module) for h in aux_heads}
    history: list[EpochLog] = []
    key = _resume_key(cfg, train_indices, select_indices, aux_heads, device)
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
        _restore_cuda_rng(saved.get("cuda_rng"), device)
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
        batches = step_batches(order, cfg.batch_size, drop_last)
        bad_step, loss_sum = _train_epoch(
            net, data, batches, augmenter, optimiser, aux_heads, cfg, device
        )
        if bad_step >= 0:  # before anything of this epoch is kept or saved
            _restore(model, aux_heads, best_state, aux_states)
            raise NonFiniteLossError(epoch, bad_step, best[1])
        select_loss, select_pckh = selection_metrics(model, data, select_indices, cfg, device)
        if not math.isfinite(select_loss):
            _restore(model, aux_heads, best_state, aux_states)
            raise NonFiniteLossError(epoch, len(batches), best[1])
        scheduler.step(select_loss)
        criterion = select_loss if cfg.select_by == "loss" else -select_pckh
        if criterion < best[0]:
            best = (criterion, epoch)
            best_state = _state(model)
            aux_states = {h.name: _state(h.module) for h in aux_heads}
        log = EpochLog(
            epoch,
            loss_sum / max(len(batches), 1),
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
                    "cuda_rng": _cuda_rng(device),
                },
            )
        if on_epoch is not None:
            on_epoch(log)
    _restore(model, aux_heads, best_state, aux_states)
    seconds = earlier_seconds + time.perf_counter() - start_time
    return FitResult(best[1], best_state, aux_states, history, seconds)


def _resume_key(
    cfg: TrainConfig,
    train: np.ndarray,
    select: np.ndarray,
    heads: Sequence[AuxiliaryHead],
    device: torch.device,
) -> str:
    """What an epoch checkpoint must match to be resumed: the data, the seed, the optimiser and
    the augmentation (its path as resolved on ``device``: ``auto`` on the CPU is ``sample``)."""
    h = hashlib.sha256(np.ascontiguousarray(train).tobytes())
    h.update(np.ascontiguousarray(select).tobytes())
    augment = dataclasses.replace(cfg.augment, path=resolve_path(cfg.augment.path, device))
    fields = (cfg.seed, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.loss, augment)
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
    """Training images/s of :func:`fit`'s step (data path with its prefetch, forward, loss,
    backward, Adam) over ``steps`` batches of ``cfg.batch_size`` drawn from ``indices``, after
    ``warmup`` untimed steps."""
    device = resolve_device(cfg.device)
    configure(device, cfg.deterministic)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device).to(memory_format=layout).train()
    net = compile_model(model, cfg.compile, cfg.compile_backend)
    optimiser = adam(model.parameters(), lr=cfg.lr)
    augmenter = make_augmenter(cfg.augment, device)
    augmenter.reseed(cfg.seed)
    order = np.resize(
        np.random.default_rng(cfg.seed).permutation(indices), (warmup + steps) * cfg.batch_size
    )
    stage = functools.partial(stage_batch, data, augmenter=augmenter, device=device)
    t0 = time.perf_counter()
    batches = step_batches(order, cfg.batch_size, True)
    with Prefetcher(batches, stage, cfg.prefetch, device) as feed:
        for step, staged in enumerate(feed):
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            sample_loss = _forward_loss(net, staged, data.image_size, cfg)[0]
            optimiser.zero_grad(set_to_none=True)
            sample_loss.mean().backward()
            optimiser.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)
