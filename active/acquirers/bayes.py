"""EGL for an ensemble in closed form, and Bayesian (Kendall & Gal) variance (EGL++ paper; docs/acquirers.md).

The ensemble: ``members`` small heads on the pose net's detached pyramid (the ``pooled`` head of
``active/acquirers/heads.py``), each predicting every joint coordinate's mean μ_k and log-variance s_k
(σ_k² = e^{s_k}), in heatmap units divided by the heatmap size. Each member trains with the Gaussian
NLL ½[(y − μ_k)² e^{−s_k} + s_k] of the ground-truth coordinates (the expectation of the target
map) beside the pose net in every cycle's ``fit`` (stop-gradient, the same run; cycle 0: on the
frozen shared model, as the other auxiliary-head acquirers). Members differ by their initial weights.
``members=1, mc_passes=T, dropout=p`` is the MC-dropout variant: one head, T stochastic passes.

bayes_variance: Σ_c [ (1/K) Σ_k μ_kc² − ((1/K) Σ_k μ_kc)²  (epistemic)  +  (1/K) Σ_k σ_kc²  (aleatoric) ].
egl_ensemble: the closed form of the expected squared gradient length under the ensemble,
Σ_c ‖∇θ f_z,c(x)‖² · (1/K) Σ_k [σ_kc² + (μ_kc − f_z,c)²], where f_z is the pose net being trained
(its soft-argmax coordinates, last stack) and c runs over joint coordinates; for a squared-error loss
it equals E_k E_{y~N(μ_k, σ_k²)} ‖∇θ ½(y − f_z,c)²‖² (tests/active/acquirers/test_egl_bayes.py checks this by Monte
Carlo). ‖∇θ f_z,c‖² is exact over Conv2d/Linear parameters (``grad_scope="last"``: the cheap
last-layer approximation), one forward per image (``egl_grads``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from active.acquirers.base import AcquisitionContext, top_k
from active.acquirers.egl import MAX_IMAGES_PER_BATCH, probe_sizes
from active.acquirers.egl_grads import Scope, sq_grad_norms_of_cotangents
from active.acquirers.heads import build_head
from hourglass.datasets.cache import PoseCache
from hourglass.datasets.views import model_images
from hourglass.evaluate import images_to_tensor
from hourglass.losses import LossKind
from hourglass.model import PoseOutput
from hourglass.train import AuxBatch, AuxiliaryHead

Component = Literal["total", "epistemic", "aleatoric"]


def closed_form_egl(grad_sq: Tensor, mu: Tensor, var: Tensor, f: Tensor) -> Tensor:
    """Σ_c grad_sq_c · mean_k [var_kc + (mu_kc − f_c)²]: grad_sq, f (N, C); mu, var (N, K, C)."""
    return (grad_sq * (var + (mu - f.unsqueeze(1)) ** 2).mean(1)).sum(-1)


def bayes_variance(mu: Tensor, var: Tensor, component: Component = "total") -> Tensor:
    """Kendall & Gal's predictive variance summed over coordinates; mu, var (N, K, C) -> (N,)."""
    epistemic = (mu**2).mean(1) - mu.mean(1) ** 2
    aleatoric = var.mean(1)
    parts = {"epistemic": epistemic, "aleatoric": aleatoric, "total": epistemic + aleatoric}
    if component not in parts:
        raise ValueError(f"component must be total, epistemic or aleatoric, got {component!r}")
    return parts[component].clamp_min(0).sum(-1)


def soft_argmax(raw: Tensor, loss: LossKind) -> tuple[Tensor, Tensor]:
    """Coordinates (B, J, 2) in [0, 1] (heatmap x, y over the map size) and their Jacobian (B, J, 2, H, W).

    The map's probabilities: softmax of the logits (ce), or the positive part normalised (mse).
    """
    b, j, h, w = raw.shape
    flat = (raw if raw.dtype == torch.float64 else raw.float()).reshape(b, j, h * w)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flat.dtype, device=raw.device),
        torch.arange(w, dtype=flat.dtype, device=raw.device),
        indexing="ij",
    )
    grid = torch.stack([xs.flatten() / w, ys.flatten() / h])  # (2, HW)
    if loss == "ce":
        p = torch.softmax(flat, -1)
        coords = p @ grid.t()  # (B, J, 2)
        jac = p.unsqueeze(2) * (grid - coords.unsqueeze(-1))  # dE[x]/dz = p (x - E[x])
    else:
        r = flat.clamp_min(0)
        mass = r.sum(-1, keepdim=True)
        p = torch.where(mass > 0, r / mass.clamp_min(1e-12), torch.full_like(r, 1.0 / (h * w)))
        coords = p @ grid.t()
        active = (flat > 0).to(flat.dtype) / mass.clamp_min(1e-12)
        jac = active.unsqueeze(2) * (grid - coords.unsqueeze(-1))
    return coords, jac.reshape(b, j, 2, h, w)


def coordinate_cotangents(raw: Tensor, loss: LossKind) -> Tensor:
    """(B, 2J, *raw.shape[1:]): d f_c / d raw for every joint coordinate c (last stack only)."""
    b, s, j = raw.shape[:3]
    _, jac = soft_argmax(raw[:, -1], loss)
    out = raw.new_zeros(b, j, 2, *raw.shape[1:])
    eye = torch.eye(j, dtype=raw.dtype, device=raw.device)
    out[:, :, :, -1] = torch.einsum("bjchw,jk->bjckhw", jac.to(raw.dtype), eye)
    return out.reshape(b, 2 * j, *raw.shape[1:])


def target_coordinates(targets: Tensor) -> Tensor:
    """Ground-truth (B, J, 2) in [0, 1]: the expectation of each (non-negative) target map."""
    b, j, h, w = targets.shape
    coords, _ = soft_argmax(targets.clamp_min(0).float(), "mse")
    return coords


class EnsembleHead(nn.Module):
    """``members`` pooled heads, each giving (μ, log σ²) of 2J coordinates; output (B, K, 2, 2J)."""

    def __init__(self, model: nn.Module, data: PoseCache, members: int, dropout: float) -> None:
        super().__init__()
        self.coords = 2 * data.num_joints
        self.members = nn.ModuleList(
            build_head("pooled", model, data, 2 * self.coords) for _ in range(members)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, output: PoseOutput) -> Tensor:
        pyramid = [self.dropout(p.float()) for p in output.pyramid]
        feats = PoseOutput(output.heatmaps, output.embedding, pyramid)
        outs = [m(feats).view(-1, 2, self.coords) for m in self.members]
        return torch.stack(outs, 1)


def ensemble_nll(prediction: Tensor, batch: AuxBatch) -> Tensor:
    """Gaussian NLL of the target coordinates, averaged over members, joints with targets, batch."""
    y = target_coordinates(batch.targets).flatten(1)  # (B, 2J): x0, y0, x1, y1, ...
    mask = batch.has_target.float().repeat_interleave(2, dim=1)
    mu, s = prediction[:, :, 0], prediction[:, :, 1].clamp(-20, 20)
    terms = 0.5 * ((y.unsqueeze(1) - mu) ** 2 * torch.exp(-s) + s)
    return (terms * mask.unsqueeze(1)).sum() / (mask.sum() * prediction.shape[1]).clamp_min(1)


class _EnsembleAcquirer:
    """Shared part: the ensemble head, its training loss and the (μ, σ²) of pool images."""

    name = "ensemble"

    def __init__(
        self,
        members: int = 5,
        mc_passes: int = 1,
        dropout: float = 0.0,
        weight: float = 1.0,
        head_epochs: int | None = None,
        chunk: int = 512,
    ) -> None:
        if members < 1 or mc_passes < 1 or (mc_passes > 1 and dropout <= 0):
            raise ValueError("members >= 1 and mc_passes >= 1 (mc_passes > 1 needs dropout > 0)")
        self.members, self.mc_passes, self.dropout = int(members), int(mc_passes), float(dropout)
        self.weight, self.head_epochs, self.chunk = float(weight), head_epochs, int(chunk)
        self.last_scores: np.ndarray = np.zeros(0)

    def auxiliary_head(self, model: nn.Module, data: PoseCache, protocol: str) -> AuxiliaryHead:
        """A fresh ensemble head and its NLL (trained beside the pose net, stop-gradient)."""
        return AuxiliaryHead(
            name=self.name,
            module=EnsembleHead(model, data, self.members, self.dropout),
            loss=self.loss,
            weight=self.weight,
            with_batch=True,
        )

    @staticmethod
    def loss(prediction: Tensor, sample_loss: Tensor, batch: AuxBatch) -> Tensor:
        """The members' NLL on one batch."""
        return ensemble_nll(prediction, batch)

    def moments(self, head: nn.Module, out: PoseOutput) -> tuple[Tensor, Tensor]:
        """(μ, σ²) (B, K·T, 2J) of one batch: every member, and T dropout passes each."""
        draws = []
        head.train(self.mc_passes > 1)  # dropout on only for MC passes
        with torch.no_grad():
            for _ in range(self.mc_passes):
                draws.append(head(out.detach()).float())
        head.eval()
        pred = torch.cat(draws, 1)
        return pred[:, :, 0], torch.exp(pred[:, :, 1].clamp(-20, 20))

    def _batches(self, ctx: AcquisitionContext, pool: np.ndarray):
        if ctx.aux_head is None:
            raise ValueError(f"{type(self).__name__} needs its ensemble head (ctx.aux_head)")
        torch.manual_seed(int(ctx.rng.integers(2**31)))  # MC-dropout masks: seeded per cycle
        desc = f"{self.name} scores" if ctx.progress else None
        yield from tqdm(
            ctx.outputs(pool),
            desc=desc,
            disable=desc is None,
            leave=False,
        )

    def select(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """The ``k`` unlabelled rows with the highest score."""
        pool = np.asarray(ctx.unlabelled, dtype=np.int64)
        scores = self.scores(ctx, pool) if len(pool) else np.zeros(0)
        picks = top_k(scores, k, highest=True)
        self.last_scores = scores[picks]
        return pool[picks]


class BayesVarianceAcquirer(_EnsembleAcquirer):
    """Highest Kendall & Gal predictive variance (``component``: total, epistemic or aleatoric)."""

    name = "bayes_variance"

    def __init__(self, component: Component = "total", **kwargs) -> None:
        super().__init__(**kwargs)
        bayes_variance(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), component)  # validates
        self.component = component

    def scores(self, ctx: AcquisitionContext, pool: np.ndarray) -> np.ndarray:
        """Summed predictive variance of each pool row."""
        parts = []
        for _, out in self._batches(ctx, pool):
            mu, var = self.moments(ctx.aux_head, out)
            parts.append(bayes_variance(mu, var, self.component).cpu())
        return torch.cat(parts).double().numpy()


class EGLEnsembleAcquirer(_EnsembleAcquirer):
    """Highest closed-form ensemble EGL: Σ_c ‖∇θ f_z,c‖² · mean_k [σ_kc² + (μ_kc − f_z,c)²]."""

    name = "egl_ensemble"

    def __init__(
        self,
        grad_scope: Scope = "all",
        grad_batch: int | None = None,
        grad_memory_mb: float = 256.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if grad_scope not in ("all", "last"):
            raise ValueError(f"grad_scope must be 'all' or 'last', got {grad_scope!r}")
        self.grad_scope, self.grad_batch = grad_scope, int(grad_batch) if grad_batch else None
        self.grad_memory_mb = float(grad_memory_mb)

    def scores(self, ctx: AcquisitionContext, pool: np.ndarray) -> np.ndarray:
        """Closed-form expected squared gradient length of each pool row."""
        _, largest = probe_sizes(ctx)
        pairs = self.grad_batch or int(self.grad_memory_mb * 2**20 / 4 / largest)
        parts = []
        for idx, out in self._batches(ctx, pool):
            mu, var = self.moments(ctx.aux_head, out)
            f, _ = soft_argmax(out.last, ctx.loss)
            per = min(max(1, pairs // mu.shape[-1]), MAX_IMAGES_PER_BATCH)
            grads = []
            for start in range(0, len(idx), per):
                x = images_to_tensor(model_images(ctx.data, idx[start : start + per]), ctx.device)
                grads.append(
                    sq_grad_norms_of_cotangents(
                        ctx.model,
                        x,
                        lambda raw: coordinate_cotangents(raw, ctx.loss),
                        scope=self.grad_scope,
                    )
                )
            parts.append(closed_form_egl(torch.cat(grads), mu, var, f.flatten(1)).cpu())
        return torch.cat(parts).double().numpy()
