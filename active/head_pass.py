"""Train an auxiliary head on a frozen pose net: how aux-head acquirers get a head for cycle 0.

Cycle 0 is trained once per seed and shared by every acquirer, so its pose weights must not move.
The head therefore trains alone on the shared model's detached outputs over the labelled set (the
anchor's separate aux-only run, anchor.md 4), with the pose net in eval mode: unlike the anchor's
run (B15) its BatchNorm statistics do not drift, so the model that selects and the model the next
cycle starts from are exactly the shared cycle-0 model. Same batches and augmentation as ``fit``;
Adam at the training learning rate, constant (the anchor's aux lr never decays, B14); the last
epoch's head is kept (no aux validation split).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from hourglass.augment import PoseAugmenter
from hourglass.datasets.cache import PoseCache
from hourglass.device import autocast, resolve_device
from hourglass.errors import AlposeError
from hourglass.evaluate import images_to_tensor
from hourglass.losses import per_sample_loss
from hourglass.train import AuxBatch, AuxiliaryHead, TrainConfig, batch_targets, make_batch


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
    optimiser = torch.optim.Adam(head.module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augmenter = PoseAugmenter(cfg.augment)
    drop_last = len(indices) >= cfg.batch_size
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(indices)
        augmenter.reseed(cfg.seed * 1_000_003 + epoch)
        steps = (
            len(order) // cfg.batch_size if drop_last else math.ceil(len(order) / cfg.batch_size)
        )
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            images, joints, vis = make_batch(data, idx, augmenter)
            with torch.no_grad(), autocast(device, cfg.amp):
                out = model(images_to_tensor(images, device))
            targets, has_target = batch_targets(
                joints, vis, data.image_size, out.heatmaps.shape[-1], cfg, device
            )
            sample_loss = per_sample_loss(out.heatmaps, targets, has_target, cfg.loss)
            loss = head.weight * head.compute_loss(sample_loss, AuxBatch(out, targets, has_target))
            if not torch.isfinite(loss):
                raise AlposeError(
                    f"the {head.name} head's loss became NaN/inf in its cycle-0 pass (epoch {epoch}); "
                    "lower train.lr"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.train(was_training)
    head.module.eval()
    return {k: v.detach().to("cpu", copy=True) for k, v in head.module.state_dict().items()}
