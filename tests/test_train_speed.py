"""Speed options of fit give the same numbers where the maths allows: channels-last vs contiguous,
torch.compile (traced, eager backend on the CPU), bf16 autocast on the CPU (close, not equal)."""

import pytest
import torch

from hourglass.augment import AugmentConfig
from hourglass.device import autocast, compile_model
from hourglass.errors import AlposeError
from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def train(data, depth=2, **kw):
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, depth, 16)
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        lr=1e-3,
        loss="mse",
        device="cpu",
        seed=2,
        augment=AugmentConfig(enabled=False),
        **kw,
    )
    result = fit(
        model, data, data.indices("train")[:24], data.indices("val")[:8], cfg, progress=False
    )
    return model.state_dict(), result


def assert_states_close(a, b, atol):
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def layouts(dtype):
    """Heatmaps and parameter gradients of one training step in channels-last and contiguous."""
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, 16).to(dtype)
    x = torch.rand(4, 3, 64, 64, dtype=dtype)
    results = []
    for layout in (torch.channels_last, torch.contiguous_format):
        model.zero_grad()
        model.to(memory_format=layout)
        out = model(x.contiguous(memory_format=layout)).heatmaps
        (out**2).mean().backward()
        results.append((out.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    return results


def test_channels_last_and_contiguous_agree(tiny_cache):
    # The same maths: float64 agrees to rounding. float32 differs by the convolutions' summation
    # order (oneDNN blocks channels-last differently): measured 5e-5 relative on the heatmaps.
    (a, ga), (b, gb) = layouts(torch.float64)
    assert (a - b).norm() / b.norm() < 1e-10
    assert (ga - gb).abs().max() < 1e-10 * ga.abs().max()
    (a, ga), (b, gb) = layouts(torch.float32)
    assert (a - b).norm() / b.norm() < 2e-4
    assert (ga - gb).norm() / gb.norm() < 1e-2  # measured 2.5e-3 (batch-norm statistics)
    # Whole fits: Adam divides by the gradients' size, so weights drift apart by ~lr where a
    # gradient is near zero; the losses still agree closely.
    _, r1 = train(tiny_cache, channels_last=True)
    _, r2 = train(tiny_cache, channels_last=False)
    assert r1.history[0].train_loss == pytest.approx(r2.history[0].train_loss, rel=1e-3)
    assert r1.history[0].select_loss == pytest.approx(r2.history[0].select_loss, rel=1e-3)


def test_compiled_training_matches_eager(tiny_cache):
    eager, r1 = train(tiny_cache, depth=1)
    compiled, r2 = train(tiny_cache, depth=1, compile="default", compile_backend="eager")
    assert_states_close(eager, compiled, 1e-5)
    assert r1.history[0].select_loss == pytest.approx(r2.history[0].select_loss, rel=1e-5)


def test_bf16_autocast_on_the_cpu_is_close_but_not_equal(tiny_cache):
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, 16).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        full = model(x).heatmaps
        with autocast(torch.device("cpu"), True, cpu=True):
            half = model(x).heatmaps
        with autocast(torch.device("cpu"), True):  # amp alone keeps the CPU in fp32
            same = model(x).heatmaps
    assert half.dtype == torch.bfloat16 and same.dtype == torch.float32
    assert torch.equal(same, full)
    rel = (half.float() - full).norm() / full.norm()
    assert 0 < rel < 0.05
    fp32, r1 = train(tiny_cache)
    bf16, r2 = train(tiny_cache, amp_cpu=True)
    assert r2.history[0].train_loss == pytest.approx(r1.history[0].train_loss, rel=0.05)
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32 if fp32[k].is_floating_point())


def test_unknown_compile_mode_is_a_clear_error():
    with pytest.raises(AlposeError, match="train.compile"):
        compile_model(torch.nn.Linear(2, 2), "fastest")
    m = torch.nn.Linear(2, 2)
    assert compile_model(m, "off") is m and compile_model(m, False) is m
