"""Train an auxiliary head on a frozen pose net: how aux-head acquirers get a head for cycle 0.

Cycle 0 is trained once per seed and shared by every acquirer, so its pose weights must not move.
The head therefore trains alone on the shared model's detached outputs over the labelled set (the
anchor's separate aux-only run, docs/anchor.md 4), with the pose net in eval mode: unlike the anchor's
run (B15) its BatchNorm statistics do not drift, so the model that selects and the model the next
cycle starts from are exactly the shared cycle-0 model. Same batches and augmentation as ``fit``;
Adam at the training learning rate, constant (the anchor's aux lr never decays, B14); the last
epoch's head is kept (no aux validation split).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from hourglass.augment_batch import finish_batch, make_augmenter, stage_batch
from hourglass.datasets.cache import PoseCache
from hourglass.device import autocast, resolve_device
from hourglass.errors import AlposeError
from hourglass.feeder import Prefetcher
from hourglass.losses import per_sample_loss
from hourglass.train import AuxBatch, AuxiliaryHead, TrainConfig, adam, step_batches, target_maps


def fit_head_frozen(
    model: nn.Module,
    head: AuxiliaryHead,
    data: PoseCache,
    indices: np.ndarray,
    cfg: TrainConfig,
    epochs: int,
) -> dict[str, Tensor]:
    """Train ``head`` for ``epochs`` on ``model``'s outputs (model untouched); returns its state."""
    device = resolve_device(cfg.device)
    indices = np.asarray(indices, dtype=np.int64)
    torch.manual_seed(cfg.seed)
    was_training = model.training
    model.to(device).eval()
    head.module.to(device).train()
    optimiser = adam(head.module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augmenter = make_augmenter(cfg.augment, device)
    drop_last = len(indices) >= cfg.batch_size
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(indices)
        augmenter.reseed(cfg.seed * 1_000_003 + epoch)
        batches = step_batches(order, cfg.batch_size, drop_last)
        first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # read once per epoch
        stage = functools.partial(stage_batch, data, augmenter=augmenter, device=device)
        with Prefetcher(batches, stage, cfg.prefetch, device) as feed:
            for step, staged in enumerate(feed):
                with torch.no_grad(), autocast(device, cfg.amp):
                    out = model(finish_batch(staged))
                targets, has_target = target_maps(
                    staged.joints, staged.present, data.image_size, out.heatmaps.shape[-1], cfg
                )
                sample_loss = per_sample_loss(out.heatmaps, targets, has_target, cfg.loss)
                batch = AuxBatch(out, targets, has_target, staged.visible)
                loss = head.weight * head.compute_loss(sample_loss, batch)
                first_bad = torch.where(torch.isfinite(loss) | (first_bad >= 0), first_bad, step)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        if int(first_bad) >= 0:
            raise AlposeError(
                f"the {head.name} head's loss became NaN/inf in its cycle-0 pass (epoch {epoch}); "
                "lower train.lr"
            )
    model.train(was_training)
    head.module.eval()
    return {k: v.detach().to("cpu", copy=True) for k, v in head.module.state_dict().items()}
