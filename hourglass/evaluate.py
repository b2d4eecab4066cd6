"""Batched inference on cached crops and PCKh of the predictions (both conventions, per joint).

Inference is fed like training (``feeder.Prefetcher``): crops are cut (memoised, ``views``) and
copied to the device (pinned, non-blocking on CUDA) a few batches ahead in a worker thread;
predictions are gathered on the device and copied to the host once. bf16 autocast only when asked
(``amp``; training's own evaluation passes ``train.amp``), so acquisition scores are fp32.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hourglass.datasets.cache import PoseCache
from hourglass.datasets.views import input_tensor, model_images
from hourglass.device import autocast
from hourglass.feeder import Prefetcher, to_device
from hourglass.heatmaps import decode, heatmap_to_image
from hourglass.joints import LSP_TO_MPII, flip_permutation
from hourglass.losses import LossKind, to_heatmaps
from hourglass.metrics import PCKResult, lsp_pck, mpii_pckh
from hourglass.model import PoseOutput


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S) in [0, 1) (/256 as the anchor), channels-last."""
    return input_tensor(to_device(images, device))


def batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``indices`` cut into consecutive batches of ``batch_size`` (the last one may be shorter)."""
    return [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]


@torch.no_grad()
def iterate_outputs(
    model: nn.Module,
    data: PoseCache,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 64,
    device: torch.device | None = None,
    flip: bool = False,
    progress: str | None = None,
    amp: bool = False,
    amp_cpu: bool = False,
    prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, PoseOutput]]:
    """Yield (batch indices, model output) over ``indices`` in eval mode, without augmentation.

    With ``flip`` the output of the mirrored crop is averaged in (heatmaps and embedding).
    ``amp``: bf16 autocast on CUDA (and on the CPU with ``amp_cpu``); off by default (fp32).
    ``prefetch``: batches prepared ahead in a worker thread (0: inline).
    """
    device = device or next(model.parameters()).device
    indices = np.asarray(indices, dtype=np.int64)
    was_training = model.training
    model.eval()
    perm = flip_permutation(data.num_joints) if flip else None

    def stage(idx: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        return idx, to_device(model_images(data, idx), device)

    parts = batches(indices, batch_size)
    try:
        with Prefetcher(parts, stage, prefetch, device) as feed:
            bar = tqdm(feed, total=len(parts), desc=progress, disable=progress is None, leave=False)
            for idx, pixels in bar:
                x = input_tensor(pixels)
                with autocast(device, amp, cpu=amp_cpu):
                    out = model(x)
                    if perm is not None:
                        mirrored = model(x.flip(-1))
                        out = PoseOutput(
                            (out.heatmaps + mirrored.heatmaps.flip(-1)[:, :, perm]) / 2,
                            (out.embedding + mirrored.embedding) / 2,
                            out.pyramid,
                        )
                yield idx, out
    finally:
        model.train(was_training)


def decode_xy(out: PoseOutput, loss: LossKind, decode_method: str, image_size: int) -> torch.Tensor:
    """Joints (B, J, 2) in crop pixels decoded from one batch's last-stack heatmaps (on their
    device)."""
    heatmaps = to_heatmaps(out.last, loss)
    xy, _ = decode(heatmaps, decode_method)  # type: ignore[arg-type]
    return heatmap_to_image(xy, image_size, heatmaps.shape[-1])


def decode_coords(
    out: PoseOutput, loss: LossKind, decode_method: str, image_size: int
) -> np.ndarray:
    """Joints (B, J, 2) in crop pixels decoded from one batch's last-stack heatmaps."""
    return decode_xy(out, loss, decode_method, image_size).cpu().numpy()


def gathered(parts: list[torch.Tensor], empty: tuple[int, ...]) -> np.ndarray:
    """Per-batch device tensors concatenated and copied to the host once (``empty``: the shape
    of no rows)."""
    if not parts:
        return np.zeros(empty, np.float32)
    return torch.cat(parts).cpu().numpy()


def predict_coords(
    model: nn.Module,
    data: PoseCache,
    indices: Sequence[int] | np.ndarray,
    *,
    loss: LossKind = "mse",
    decode_method: str = "parabola",
    batch_size: int = 64,
    device: torch.device | None = None,
    flip: bool = False,
    progress: str | None = None,
    amp: bool = False,
    amp_cpu: bool = False,
    prefetch: int = 2,
) -> np.ndarray:
    """Predicted joints (N, J, 2) in crop pixels for ``indices`` (last stack, decoded; gathered
    on the device, one copy to the host)."""
    outputs = iterate_outputs(
        model,
        data,
        indices,
        batch_size=batch_size,
        device=device,
        flip=flip,
        progress=progress,
        amp=amp,
        amp_cpu=amp_cpu,
        prefetch=prefetch,
    )
    coords = [decode_xy(out, loss, decode_method, data.image_size) for _, out in outputs]
    return gathered(coords, (0, data.num_joints, 2))


def score(data: PoseCache, indices: np.ndarray, coords: np.ndarray) -> dict[str, PCKResult]:
    """PCK of predicted crop coordinates in every convention the dataset supports.

    16 joints (MPII order, head-diagonal normaliser): ``standard`` PCKh@0.5 and ``paper``.
    14 joints (LSP order): ``standard`` = torso PCK@0.2. Real LSP/LSPET caches also give the
    anchor's ``paper`` PCK, mask unannotated joints and use the cached torso (MPII-order LSP is
    scored on its 14 LSP joints).
    """
    gt = data.joints[indices].astype(np.float64)
    scored = data.visibility[indices] >= 0
    if data.num_joints == 16 and data.normaliser_kind == "head_diagonal":
        diag = data.normaliser[indices].astype(np.float64)
        return {
            convention: mpii_pckh(coords, gt, scored, head_diag=diag, convention=convention)
            for convention in ("standard", "paper")
        }
    if data.has_margin or data.num_joints != 14:  # real LSP/LSPET (masked; cached torso)
        if data.num_joints == 16:  # LSP stored in MPII order: score the 14 LSP joints
            lsp = list(LSP_TO_MPII)
            coords, gt, scored = coords[:, lsp], gt[:, lsp], scored[:, lsp]
        torso = data.normaliser[indices].astype(np.float64)
        return {
            "standard": lsp_pck(coords, gt, scored=scored, torso=torso),
            "paper": lsp_pck(coords, gt, scored=scored, convention="paper"),
        }
    return {"standard": lsp_pck(coords, gt)}


def headline(result: PCKResult) -> float:
    """The one number of a result: MPII ``Mean`` or LSP ``Total`` (percent)."""
    return float(result.summary[result.headline])
