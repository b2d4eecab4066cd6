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


@pytest.mark.parametrize(
    ("mode", "marked"),
    [("off", 0), ("default", 0), ("reduce-overhead", 1), ("max-autotune", 1)],
)
def test_cuda_graph_modes_mark_each_step(monkeypatch, mode, marked):
    from hourglass.device import mark_step

    calls = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    mark_step(mode)
    assert len(calls) == marked


@pytest.fixture
def cuda_settings(monkeypatch):
    """Restores the process-wide settings ``device.configure`` changes."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def settings():
    import os

    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )


def test_deterministic_mode_sets_the_cuda_switches_and_the_cpu_keeps_its_own(cuda_settings):
    from hourglass.device import configure

    torch.backends.cudnn.benchmark = False
    before = settings()
    configure(torch.device("cpu"), deterministic=True)
    configure(torch.device("cpu"), deterministic=False)
    assert settings() == before  # the CPU is deterministic already
    configure(torch.device("cuda", 0), deterministic=False)
    assert settings() == (False, False, True, None)  # cuDNN autotuning for fixed shapes
    configure(torch.device("cuda", 0), deterministic=True)
    assert settings() == (True, True, False, ":4096:8")
    configure(torch.device("cuda", 0), deterministic=False)
    assert settings()[:3] == (False, False, True)


def test_fit_configures_its_device(tiny_cache, monkeypatch):
    from hourglass import train as train_module

    seen = []
    monkeypatch.setattr(train_module, "configure", lambda d, det: seen.append((d.type, det)))
    train(tiny_cache, deterministic=True)
    assert seen == [("cpu", True)]


def test_inference_autocasts_only_when_asked_and_training_passes_its_amp(tiny_cache, monkeypatch):
    from hourglass import evaluate
    from hourglass.train import selection_metrics

    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, 16)
    rows = tiny_cache.indices("val")[:4]
    cpu = torch.device("cpu")
    dtypes = [
        out.heatmaps.dtype
        for _, out in evaluate.iterate_outputs(model, tiny_cache, rows, device=cpu)
    ]
    dtypes += [
        out.heatmaps.dtype
        for _, out in evaluate.iterate_outputs(
            model, tiny_cache, rows, device=cpu, amp=True, amp_cpu=True
        )
    ]
    assert dtypes == [torch.float32, torch.bfloat16]
    asked = []
    real = evaluate.autocast
    monkeypatch.setattr(
        evaluate, "autocast", lambda d, amp, cpu: asked.append((amp, cpu)) or real(d, amp, cpu)
    )
    list(evaluate.iterate_outputs(model, tiny_cache, rows, device=cpu))
    cfg = TrainConfig(device="cpu", amp=True, amp_cpu=False, eval_batch_size=8)
    selection_metrics(model, tiny_cache, rows, cfg, cpu)
    assert asked == [(False, False), (True, False)]
