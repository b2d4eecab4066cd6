"""EGL++: exact per-target gradient norms vs a plain autograd loop, the perplexity bisection in both
conventions, the acquirer's scores vs a direct computation, determinism, a tiny run, the bench."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers.paths import REPO
from helpers.runs import alpose, smoke
from helpers.tiny import tiny_overrides
from scipy.stats import spearmanr

from active.acquirers.base import AcquisitionContext
from active.acquirers.egl import (
    EGLPlusPlusAcquirer,
    bisect_sigma,
    conditional_probabilities,
    neighbour_weights,
    per_target_sq_grad_norms,
    perplexity,
)
from active.acquirers.egl_grads import grad_parameters, sq_grad_norms_of_cotangents, target_loss
from hourglass.datasets.views import model_images
from hourglass.evaluate import images_to_tensor
from hourglass.model import StackedHourglass


def loop_norms(model, images, targets, loss="mse", params=None):
    """The reference: one forward and one autograd backward per (image, target)."""
    model.eval()
    params = grad_parameters(model) if params is None else params
    out = torch.zeros(targets.shape[:2], dtype=torch.float64)
    for b in range(images.shape[0]):
        for k in range(targets.shape[1]):
            value = target_loss(model(images[b : b + 1]).heatmaps, targets[b : b + 1, k], loss)
            grads = torch.autograd.grad(value.sum(), params)
            out[b, k] = sum(float(g.double().pow(2).sum()) for g in grads)
    return out


def shuffled_bn(model):
    """Non-trivial BatchNorm statistics and affine parameters (eval mode uses them)."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def trained(model, steps=5):
    """A few Adam steps (train mode) so the weights and BN statistics are no longer the initial ones."""
    torch.manual_seed(5)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)  # cpu_small's rate
    model.train()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        y = torch.rand_like(model(x).heatmaps)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x).heatmaps - y) ** 2).mean().backward()
        opt.step()
    return model.eval()


def small_case(weights, loss):
    torch.manual_seed(0)
    model = StackedHourglass(stacks=2, channels=8, depth=2, joints=5, input_skip=True)
    model = shuffled_bn(model) if weights == "random" else trained(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        t = model(torch.rand(3, 3, 32, 32)).heatmaps  # other images' predictions as targets
    targets = torch.stack([t, t.flip(0)])  # (B=2, K=3, S, J, H, W)
    if loss == "ce":
        targets = targets.clamp_min(0) + 0.01
    return model, x, targets


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_fast_norms_match_the_autograd_loop_random_weights(loss):
    model, x, targets = small_case("random", loss)
    fast = per_target_sq_grad_norms(model, x, targets, loss)
    assert fast.shape == (2, 3)
    assert torch.allclose(fast.double(), loop_norms(model, x, targets, loss), rtol=1e-5, atol=0)
    assert not model.training


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_fast_norms_match_the_autograd_loop_trained_weights(loss):
    model, x, targets = small_case("trained", loss)
    fast32 = per_target_sq_grad_norms(model, x, targets, loss).double()
    model, x, targets = model.double(), x.double(), targets.double()
    truth = loop_norms(model, x, targets, loss)
    assert torch.allclose(
        per_target_sq_grad_norms(model, x, targets, loss), truth, rtol=1e-10, atol=0
    )
    # float32 rounding alone: the float32 autograd loop is itself ~2e-5 from the truth here
    assert torch.allclose(fast32, truth, rtol=1e-4, atol=0)


def test_exact_in_double_with_batchnorm_and_the_torch_func_fallback_agrees():
    torch.manual_seed(1)
    model = shuffled_bn(StackedHourglass(2, 16, 2, 4, input_skip=False)).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        targets = model(torch.rand(3, 3, 32, 32, dtype=torch.float64)).heatmaps.expand(
            2, -1, -1, -1, -1, -1
        )
    bn = grad_parameters(model, include_bn=True)
    assert len(bn) > len(grad_parameters(model))
    fast = per_target_sq_grad_norms(model, x, targets, include_bn=True)
    ref = loop_norms(model, x, targets, params=bn)
    assert torch.allclose(fast, ref, rtol=1e-11, atol=0)
    via_vmap = sq_grad_norms_of_cotangents(
        model,
        x,
        lambda raw: 2 * (raw.unsqueeze(1) - targets) / raw[0].numel(),
        include_bn=True,
        method="vmap",
    )
    assert torch.allclose(via_vmap, ref, rtol=1e-11, atol=0)


def test_every_method_and_chunking_gives_the_same_numbers_in_double(monkeypatch):
    """transpose (whole and K in chunks), autograd (shared forward) and vmap equal the loop."""
    import active.acquirers.egl_grads as eg

    torch.manual_seed(4)
    model = shuffled_bn(StackedHourglass(2, 8, 2, 5, input_skip=True)).double().eval()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        t = model(torch.rand(4, 3, 32, 32, dtype=torch.float64)).heatmaps
    targets = torch.stack([t, t.flip(0), t.roll(1, 0)])  # (B=3, K=4, ...)
    ref = loop_norms(model, x, targets)

    def cot(raw):
        return 2 * (raw.unsqueeze(1) - targets) / raw[0].numel()

    for method, pairs in [
        ("transpose", None),
        ("transpose", 3),
        ("autograd", None),
        ("vmap", None),
    ]:
        got = sq_grad_norms_of_cotangents(model, x, cot, method=method, max_pairs=pairs)
        assert torch.allclose(got, ref, rtol=1e-11, atol=0), (method, pairs)
    # auto: the transpose for small activations, autograd above the threshold (CPU)
    calls = []
    monkeypatch.setattr(eg, "_autograd_norms", lambda *a: calls.append(1) or ref)
    sq_grad_norms_of_cotangents(model, x, cot)
    assert calls == []
    largest = eg._LARGEST[model][tuple(x.shape[1:])]  # the model's largest map per image
    assert largest == 4 * 16 * 16  # the stem's 4-channel 16x16 output
    monkeypatch.setattr(eg, "AUTOGRAD_ABOVE", largest - 1)
    assert sq_grad_norms_of_cotangents(model, x, cot) is ref and calls == [1]


def test_last_layer_scope_is_the_last_convolutions_gradient():
    torch.manual_seed(2)
    model = shuffled_bn(StackedHourglass(1, 16, 2, 4)).eval()
    x, targets = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 1, 4, 8, 8)
    last = per_target_sq_grad_norms(model, x, targets, scope="last")
    ref = loop_norms(model, x, targets, params=list(model.outs[-1].parameters()))
    assert torch.allclose(last.double(), ref, rtol=1e-5)
    assert (last < per_target_sq_grad_norms(model, x, targets)).all()


# -- neighbour weights --------------------------------------------------------------------------
@pytest.mark.parametrize("base", [2.0, math.e])
def test_bisection_reaches_the_perplexity_in_both_conventions(base):
    g = torch.Generator().manual_seed(0)
    pool, labelled = torch.randn(40, 8, generator=g), torch.randn(300, 8, generator=g)
    d2 = torch.cdist(pool.double(), labelled.double()) ** 2
    sigma, perp = bisect_sigma(d2, 20.0, 1e-3, base)
    assert (perp - 20.0).abs().max() <= 1e-3
    p = conditional_probabilities(d2, sigma)
    assert torch.allclose(p.sum(1), torch.ones(40, dtype=p.dtype))
    entropy = -torch.xlogy(p, p).sum(1)  # nats
    assert torch.allclose(base**entropy, perp)
    if base == 2.0:  # the anchor's 2^nats: an effective standard perplexity of e^(log2 20) ~ 75
        assert torch.allclose(
            torch.exp(entropy), torch.full_like(entropy, math.exp(math.log2(20))), rtol=1e-3
        )


def test_neighbour_weights_do_not_depend_on_the_chunk_and_are_the_top_k():
    g = torch.Generator().manual_seed(1)
    pool, labelled = torch.randn(25, 6, generator=g), torch.randn(90, 6, generator=g)
    a_idx, a_w = neighbour_weights(pool, labelled, k=7, chunk=4)
    b_idx, b_w = neighbour_weights(pool, labelled, k=7, chunk=1000)
    assert torch.equal(a_idx, b_idx) and torch.allclose(a_w, b_w)
    nearest = torch.cdist(pool, labelled).argsort(1)[:, :7]
    assert torch.equal(a_idx.sort(1).values, nearest.sort(1).values)
    assert (a_w.sum(1) < 1).all()  # not renormalised over the k kept (the anchor)
    assert perplexity(torch.full((1, 4), 0.25, dtype=torch.float64), 2.0).item() == pytest.approx(
        2 ** math.log(4)
    )


# -- the acquirer ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx_parts(tiny_cache):
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, tiny_cache.num_joints).eval()
    pool = tiny_cache.indices("train")
    return model, tiny_cache, pool[:20], pool[20:44]


def make_ctx(parts, protocol="standard", loss="mse"):
    model, data, labelled, unlabelled = parts
    return AcquisitionContext(
        model,
        data,
        labelled,
        unlabelled,
        np.random.default_rng(0),
        loss=loss,
        progress=False,
        protocol=protocol,
    )


@pytest.mark.parametrize("protocol", ["paper", "standard"])
def test_egl_pp_scores_are_the_weighted_per_target_norms(ctx_parts, protocol):
    ctx = make_ctx(ctx_parts, protocol)
    acq = EGLPlusPlusAcquirer(k=5, perplexity=4.0)
    base, include_bn = acq.settings(protocol)
    assert (base, include_bn) == ((2.0, False) if protocol == "paper" else (math.e, True))
    scores = acq.scores(ctx, ctx.unlabelled)
    model, data, labelled, pool = ctx_parts
    emb_pool = ctx.infer(pool, embedding=True).embedding
    emb_lab = ctx.infer(labelled, embedding=True).embedding
    idx, w = neighbour_weights(emb_pool, emb_lab, 5, 4.0, 1e-3, base)
    rows = [0, 7]
    x = images_to_tensor(model_images(data, pool[rows]), torch.device("cpu"))
    with torch.no_grad():
        lab_raw = model(
            images_to_tensor(model_images(data, labelled), torch.device("cpu"))
        ).heatmaps
    targets = lab_raw[idx[rows]]
    params = grad_parameters(model, include_bn)
    direct = (w[rows] * loop_norms(model, x, targets, params=params)).sum(1).numpy()
    assert np.allclose(scores[rows], direct, rtol=1e-5)


def test_egl_pp_picks_are_deterministic_and_unlabelled(ctx_parts):
    picks = [EGLPlusPlusAcquirer(k=5).select(make_ctx(ctx_parts, loss="ce"), 6) for _ in range(2)]
    assert np.array_equal(picks[0], picks[1])
    assert len(set(picks[0])) == 6 and np.isin(picks[0], ctx_parts[3]).all()
    spilled = EGLPlusPlusAcquirer(k=5, target_memory_mb=1e-4)  # targets via the memmap file
    assert np.array_equal(spilled.select(make_ctx(ctx_parts, loss="ce"), 6), picks[0])


def test_alpose_run_with_egl_pp_and_the_last_layer_analysis(cli, tmp_path, tiny_data_dir):
    r = alpose(
        *smoke(
            tmp_path / "runs", tiny_data_dir, "acquirers=[egl_pp]", "seeds=[0]", "pool_subsample=30"
        ),
        *tiny_overrides(tiny_data_dir, tmp_path / "runs")[2:],
    )
    assert r.returncode == 0, r.stderr
    cell = tmp_path / "runs" / "smoke" / "egl_pp" / "seed_0" / "selections"
    sel = np.load(cell / "cycle_1.npy")
    assert len(sel) == 12 and np.all(np.diff(sel["score"]) <= 0) and (sel["score"] > 0).all()

    # item 4: the last-layer approximation against the exact score on the run's own pool
    out = tmp_path / "approx.json"
    run_dir = tmp_path / "runs" / "smoke"
    status, stdout, _ = cli("analyze", "egl-last", run_dir, "--rows", "20", "--json", out)
    assert status == 0 and "Spearman rho" in stdout
    got = json.loads(out.read_text())
    assert (got["acquirer"], got["seed"], got["cycle"], got["offered"]) == ("egl_pp", 0, 2, 30)
    rows, exact, last = (np.array(got[k]) for k in ("rows", "exact", "last"))
    assert len(rows) == 20 and np.all(np.diff(rows) > 0)
    assert (last > 0).all() and (last < exact).all()  # fewer parameters, smaller norms
    assert got["spearman"] == pytest.approx(spearmanr(exact, last).statistic)
    m = 8  # the run's pick rate: 12 of 30 offered, of 20 rows
    assert got["top_overlap"] == len(set(np.argsort(-exact)[:m]) & set(np.argsort(-last)[:m])) / m
    # the exact side is the run's own score: the picked rows among the 20 get their stored scores
    picks = np.load(cell / "cycle_2.npy")
    common, a, b = np.intersect1d(rows, picks["index"], return_indices=True)
    assert len(common) >= 2 and np.allclose(exact[a], picks["score"][b], rtol=1e-4)
    status, _, err = cli("analyze", "egl-last", run_dir, "--rows", "1")
    assert status == 2 and "--rows" in err


def test_bench_egl_prints_a_table_and_writes_json(cli, tmp_path):
    out = tmp_path / "bench.json"
    status, stdout, _ = cli(
        "bench",
        "egl",
        "--models",
        "hourglass_small",
        "--images",
        "2",
        "--targets",
        "3",
        "--size",
        "32",
        "--json",
        out,
    )
    assert status == 0 and "hourglass_small" in stdout and "speed-up" in stdout
    row = json.loads(out.read_text())["rows"][0]
    assert row["targets"] == 3 and row["images_fast"] == 2 and row["max_rel_diff"] < 1e-5
    assert row["method"] == "transpose"  # small activations
    # the bound is the loop's time over f + K b, with b = loop time per target - f
    k, ref, f = row["targets"], row["reference_s_per_image"], row["forward_s"]
    assert row["shared_forward_bound"] == pytest.approx(ref / (f + k * (ref / k - f)), rel=0.02)
    # the no-weight-gradient floor: the loop's time over f + K b_in, b_in measured on its own
    b_in = row["input_backward_s"]
    assert b_in > 0 and row["input_backward_bound"] == pytest.approx(ref / (f + k * b_in), rel=0.02)
    assert "no-wgrad bound" in stdout
    status, _, _ = cli("bench", "egl", "--models", "nope")
    assert status == 2
    assert (REPO / "configs" / "acquirer" / "egl_pp.yaml").is_file()
