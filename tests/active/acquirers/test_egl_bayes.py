"""EGL for an ensemble in closed form ("two sides of the same coin") and Kendall & Gal variance:
Monte-Carlo convergence to the closed form, soft-argmax Jacobians, the ensemble head, the acquirers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from active.acquirers.base import AcquisitionContext
from active.acquirers.bayes import (
    BayesVarianceAcquirer,
    EGLEnsembleAcquirer,
    bayes_variance,
    closed_form_egl,
    coordinate_cotangents,
    ensemble_nll,
    soft_argmax,
)
from active.acquirers.egl_grads import sq_grad_norms_of_cotangents
from hourglass.model import StackedHourglass
from hourglass.train import AuxBatch


def regression_model(outputs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, outputs)
    ).double()


def mc_expected_sq_grad(model, x, mu, sigma, n, seed=0):
    """E_k E_{y ~ N(mu_k, sigma_k^2)} ‖∇θ ½ ‖y − f(x)‖²‖², by sampling y and differentiating."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def sq_grad(y):
        def loss(p):
            return 0.5 * ((y - functional_call(model, p, (x,))) ** 2).sum()

        return sum(g.pow(2).sum() for g in grad(loss)(params).values())

    gen = torch.Generator().manual_seed(seed)
    k, c = mu.shape
    y = mu + sigma * torch.randn(n, k, c, generator=gen, dtype=mu.dtype)  # (n, K, C)
    return vmap(sq_grad)(y.reshape(-1, c)).mean()


def test_monte_carlo_expected_gradient_length_converges_to_the_closed_form():
    model = regression_model(1)
    x = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    mu = torch.tensor([[0.4], [-0.3], [1.1]], dtype=torch.float64)  # K = 3 ensemble members
    sigma = torch.tensor([[0.5], [0.2], [0.8]], dtype=torch.float64)
    f = model(x).detach()
    g = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    grad_sq = sum(t.pow(2).sum() for t in g).reshape(1, 1)
    closed = closed_form_egl(grad_sq, mu[None], sigma[None] ** 2, f[None]).item()
    errors = [
        abs(mc_expected_sq_grad(model, x, mu, sigma, n).item() / closed - 1) for n in (100, 40_000)
    ]
    assert errors[1] < 0.01  # ~1/sqrt(n): the two sides agree
    assert errors[1] < errors[0]


def test_closed_form_sums_over_coordinates():
    """Several outputs (joint coordinates): Σ_c ‖∇f_c‖² · mean_k[σ² + (μ − f_c)²] is E‖∇ Σ_c ℓ_c‖²
    only when the coordinates' gradients are orthogonal; the acquirer's form is the per-coordinate
    sum, which equals the expectation summed over one-coordinate losses."""
    model = regression_model(2)
    x = torch.tensor([-0.7, 0.1, 0.9], dtype=torch.float64)
    mu = torch.tensor([[0.2, -0.5], [0.6, 0.1]], dtype=torch.float64)
    sigma = torch.tensor([[0.3, 0.4], [0.1, 0.6]], dtype=torch.float64)
    f = model(x).detach()
    grad_sq = torch.stack(
        [
            sum(t.pow(2).sum() for t in torch.autograd.grad(model(x)[c], list(model.parameters())))
            for c in range(2)
        ]
    )[None]
    closed = closed_form_egl(grad_sq, mu[None], sigma[None] ** 2, f[None]).item()
    mc = sum(
        mc_expected_sq_grad(
            _Pick(model, c), x, mu[:, c : c + 1], sigma[:, c : c + 1], 40_000, seed=c
        )
        for c in range(2)
    ).item()
    assert mc == pytest.approx(closed, rel=0.01)


class _Pick(torch.nn.Module):
    def __init__(self, model, c):
        super().__init__()
        self.model, self.c = model, c

    def forward(self, x):
        return self.model(x)[..., self.c : self.c + 1]


def test_bayes_variance_is_epistemic_plus_aleatoric():
    mu = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # K = 2 members, 2 coordinates
    var = torch.tensor([[[0.5, 0.1], [1.5, 0.3]]])
    assert bayes_variance(mu, var, "epistemic").item() == pytest.approx(1.0)
    assert bayes_variance(mu, var, "aleatoric").item() == pytest.approx(1.0 + 0.2)
    assert bayes_variance(mu, var).item() == pytest.approx(2.2)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_soft_argmax_jacobian_matches_autograd(loss):
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    coords, jac = soft_argmax(raw, loss)
    auto = torch.autograd.functional.jacobian(lambda r: soft_argmax(r, loss)[0], raw)
    for j in range(3):
        assert torch.allclose(
            jac[:, j], auto[:, j, :, :, j].diagonal(dim1=0, dim2=2).permute(3, 0, 1, 2)
        )
    peak = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    peak[0, 0, 1, 2] = 50.0  # one sharp peak at x = 2, y = 1
    assert torch.allclose(
        soft_argmax(peak, "ce")[0], torch.tensor([[[2 / 4, 1 / 4]]], dtype=torch.float64)
    )


def test_coordinate_gradient_norms_are_exact():
    torch.manual_seed(1)
    model = StackedHourglass(2, 8, 2, 3).eval()
    x = torch.rand(1, 3, 32, 32)
    norms = sq_grad_norms_of_cotangents(model, x, lambda raw: coordinate_cotangents(raw, "ce"))
    coords, _ = soft_argmax(model(x).heatmaps[:, -1], "ce")
    params = [p for m in model.modules() if isinstance(m, torch.nn.Conv2d) for p in m.parameters()]
    ref = [
        sum(
            g.pow(2).sum()
            for g in torch.autograd.grad(coords.flatten()[c], params, retain_graph=True)
        )
        for c in range(6)
    ]
    assert torch.allclose(norms[0], torch.stack(ref), rtol=1e-4)


def test_ensemble_nll_is_lowest_at_the_truth():
    targets = torch.zeros(1, 2, 8, 8)
    targets[0, 0, 2, 5] = 1.0
    targets[0, 1, 6, 1] = 1.0
    batch = AuxBatch(output=None, targets=targets, has_target=torch.ones(1, 2, dtype=torch.bool))
    truth = torch.tensor([5 / 8, 2 / 8, 1 / 8, 6 / 8])
    good = torch.stack([truth, torch.zeros(4)])[None, None]  # (B, K=1, 2, 2J)
    bad = good.clone()
    bad[0, 0, 0] += 0.1
    assert ensemble_nll(good, batch) < ensemble_nll(bad, batch)


@pytest.mark.parametrize("cls", [BayesVarianceAcquirer, EGLEnsembleAcquirer])
def test_ensemble_acquirers_select_deterministically(tiny_cache, cls):
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, tiny_cache.num_joints).eval()
    acq = cls(members=3)
    torch.manual_seed(1)
    head = acq.auxiliary_head(model, tiny_cache, "standard").module.eval()
    pool = tiny_cache.indices("train")

    def ctx():
        return AcquisitionContext(
            model,
            tiny_cache,
            pool[:10],
            pool[10:22],
            np.random.default_rng(0),
            loss="ce",
            aux_head=head,
            progress=False,
        )

    picks = [acq.select(ctx(), 5) for _ in range(2)]
    assert np.array_equal(*picks) and np.isin(picks[0], pool[10:22]).all()
    assert np.all(acq.last_scores > 0)
