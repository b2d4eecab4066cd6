"""GPU self-test (``make gpu-check`` runs ``scripts/gpu_check.py``, which runs these and prints a
summary). Every test is marked ``gpu`` and skipped where ``torch.cuda.is_available()`` is False.

``ALPOSE_GPU_CHECK_DEVICE=cpu`` runs them on the CPU instead of skipping them (smaller sizes, no
EGL++ row in the paper-model bench): a check of the code paths, not of a GPU. Each test writes
its figures to ``$ALPOSE_GPU_CHECK_OUT/<test>.json`` (default ``runs/gpu_check/``) before its
assertions, so the summary has them even when a check fails.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers.paths import REPO

DEVICE = os.environ.get("ALPOSE_GPU_CHECK_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        ON_GPU and not torch.cuda.is_available(),
        reason="no CUDA GPU (torch.cuda.is_available() is False); "
        "ALPOSE_GPU_CHECK_DEVICE=cpu runs the gpu checks on the CPU",
    ),
]
SCORE_RTOL = 1e-3  # fp32 on both sides (TF32 off): max |CPU - GPU| over max |score|
EGL_RTOL = 1e-2  # the fast path vs the per-target loop, both with cuDNN's default TF32


def out_dir() -> Path:
    """Where the figures go: ``$ALPOSE_GPU_CHECK_OUT`` or ``runs/gpu_check``."""
    return Path(os.environ.get("ALPOSE_GPU_CHECK_OUT") or REPO / "runs" / "gpu_check")


def record(**figures: object) -> None:
    """Write the running test's figures to ``<out>/<test name>.json``."""
    test = os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0]
    path = out_dir() / f"{test}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"test": test, "device": DEVICE, **figures}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(path)


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def no_tf32():
    """Plain fp32 matmuls and convolutions on CUDA inside the block."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# -- 1. the GPU claim on this machine ----------------------------------------------------------
def test_claims_every_visible_gpu_then_waits(tmp_path):
    from active.loop.gpu_claim import claim_gpu, claimed_device, slot_names, visible_gpu_count

    n = visible_gpu_count() if ON_GPU else 2  # on the CPU: 2 fake GPUs
    names = slot_names(n)
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if ON_GPU else None,
        "visible_gpus": n,
        "slots": names,
    }
    record(**info)
    with contextlib.ExitStack() as stack:
        if ON_GPU:
            device = stack.enter_context(claimed_device("auto", lock_dir=tmp_path))
            assert device == "cuda:0" and torch.cuda.current_device() == 0
            rest = range(1, n)
        else:
            rest = range(n)
        got = [stack.enter_context(claim_gpu(tmp_path, n, on_wait=None)) for _ in rest]
        assert got == list(rest)

        def refuse(line: str) -> None:
            raise RuntimeError(line)

        with pytest.raises(RuntimeError, match="waiting for a free GPU"):  # all taken
            stack.enter_context(claim_gpu(tmp_path, n, on_wait=refuse))
    with claim_gpu(tmp_path, n, on_wait=refuse) as first:  # all free again
        assert first == 0


# -- 2. acquisition scores: GPU vs CPU ---------------------------------------------------------
def _scores(device, model, head, data, labelled, pool, egl_pool):
    from active.acquirers.base import AcquisitionContext
    from active.acquirers.coreset import CoreSetAcquirer, nearest_centre_distance
    from active.acquirers.egl import EGLPlusPlusAcquirer
    from active.acquirers.learning_loss import LearningLossAcquirer
    from active.acquirers.multipeak import MultiPeakAcquirer

    amp_on = SimpleNamespace(loss="ce", eval_batch_size=64, amp=True)  # as train.amp=true
    ctx = AcquisitionContext.for_training(
        copy.deepcopy(model),
        data,
        labelled,
        pool,
        np.random.default_rng([0, 17, 1]),
        torch.device(device),
        amp_on,
        copy.deepcopy(head),
    )
    unlabelled, centres = CoreSetAcquirer().embed(ctx)
    return {
        "coreset": nearest_centre_distance(unlabelled, centres).cpu().numpy(),
        "multipeak": MultiPeakAcquirer().scores(ctx, pool),
        "learning_loss": LearningLossAcquirer().scores(ctx, pool),
        "egl_pp": EGLPlusPlusAcquirer().scores(ctx, egl_pool),
    }


def _differences(cpu: dict, gpu: dict) -> dict:
    out = {}
    for name, a in cpu.items():
        a, b = np.asarray(a, np.float64), np.asarray(gpu[name], np.float64)
        diff = float(np.abs(a - b).max())
        out[name] = {"max_abs": diff, "rel": diff / max(float(np.abs(a).max()), 1e-30)}
    return out


def test_acquisition_scores_on_the_gpu_equal_the_cpus(tiny_cache):
    """Same weights, same pool: fp32 scores on both sides (acquisition never autocasts, whatever
    train.amp says); with TF32 off the GPU must match the CPU to fp32 rounding. The differences
    with torch's default TF32 convolutions (what a run uses) are recorded, not asserted."""
    from active.acquirers.learning_loss import LearningLossAcquirer
    from hourglass.model import StackedHourglass

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = StackedHourglass(1, 16, 2, 16).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics (eval mode uses them)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.manual_seed(29)
    head = LearningLossAcquirer().auxiliary_head(model, tiny_cache, "standard").module.eval()
    rows = tiny_cache.indices("train")
    labelled, pool = rows[:40], rows[40:240]
    args = (model, head, tiny_cache, labelled, pool, pool[:8])
    with no_tf32():
        cpu = _scores("cpu", *args)
        diffs = _differences(cpu, _scores(DEVICE, *args))
    tf32 = _differences(cpu, _scores(DEVICE, *args)) if ON_GPU else None
    record(
        differences=diffs,
        with_default_tf32=tf32,
        rtol=SCORE_RTOL,
        pool=len(pool),
        seconds=time.perf_counter() - t0,
    )
    too_far = {k: v for k, v in diffs.items() if not v["rel"] <= SCORE_RTOL}
    assert not too_far, (
        f"acquisition scores on {DEVICE} differ from the CPU's beyond fp32 (rel {SCORE_RTOL}): "
        f"{too_far}"
    )


# -- 3. EGL++ fast path vs the per-target loop -------------------------------------------------
def test_egl_fast_path_matches_the_per_target_loop(cli, tmp_path, keep_threads):
    out = tmp_path / "egl.json"
    sizes = (
        ["--images", "8", "--reference-images", "2", "--targets", "30"]
        if ON_GPU
        else ["--images", "2", "--reference-images", "1", "--targets", "4", "--size", "64"]
    )
    t0 = time.perf_counter()
    status, stdout, err = cli(
        "bench",
        "egl",
        "--models",
        "hourglass_small,hourglass_paper",
        "--device",
        DEVICE,
        *sizes,
        "--json",
        out,
    )
    rows = json.loads(out.read_text())["rows"] if status == 0 else []
    record(
        rows=[
            {
                k: r[k]
                for k in (
                    "model",
                    "input_px",
                    "method",
                    "targets",
                    "fast_s_per_image",
                    "reference_s_per_image",
                    "speedup",
                    "max_rel_diff",
                )
            }
            for r in rows
        ],
        rtol=EGL_RTOL,
        seconds=time.perf_counter() - t0,
    )
    assert status == 0, err
    assert [r["model"] for r in rows] == ["hourglass_small", "hourglass_paper"]
    for r in rows:
        assert r["max_rel_diff"] <= EGL_RTOL, r
        assert r["device"].startswith(DEVICE.split(":")[0])


# -- 4. the smoke experiment end to end, killed and resumed ------------------------------------
def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted([*root.rglob("state.json"), *root.rglob("metrics.csv")])
    }


def test_smoke_experiment_end_to_end_killed_and_resumed(cli, tmp_path, keep_threads):
    runs, data = tmp_path / "runs", tmp_path / "data"
    args = [
        "run",
        "experiment=smoke",
        f"paths.runs={runs}",
        f"paths.data={data}",
        "progress=false",
        f"device={DEVICE}",
    ]
    root = runs / "smoke"
    cells = [f"{a}/seed_{s}" for a in ("random", "coreset") for s in (0, 1)]

    def cycles() -> dict[str, int]:
        out = {}
        for cell in cells:
            path = root / cell / "state.json"
            out[cell] = json.loads(path.read_text())["cycle"] if path.exists() else -1
        return out

    env = {**os.environ, "PYTHONPATH": str(REPO), "ALPOSE_TEST_KILL_AT": "acquire:3"}
    t0 = time.perf_counter()
    killed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "alpose"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    t1 = time.perf_counter()
    at_kill = cycles()
    if ON_GPU:
        torch.cuda.reset_peak_memory_stats()
    status, _, err = cli(*args)  # resume
    t2 = time.perf_counter()
    done = cycles()
    peak = torch.cuda.max_memory_allocated() if ON_GPU else 0
    files = _files(root)
    again, _, err_again = cli(*args)  # every cell done: nothing trained, nothing rewritten
    t3 = time.perf_counter()
    pckh = {}
    for cell in cells:
        path = root / cell / "metrics.csv"
        if path.exists():
            with open(path, newline="") as f:
                pckh[cell] = float(list(csv.DictReader(f))[-1]["pckh_standard"])
    record(
        killed_returncode=killed.returncode,
        cycles_at_kill=at_kill,
        cycles_after_resume=done,
        seconds_killed_run=t1 - t0,
        seconds_resume=t2 - t1,
        seconds_rerun_all_done=t3 - t2,
        peak_gpu_memory_mb=peak / 2**20,
        final_pckh=pckh,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert min(at_kill.values()) < 2, at_kill  # something left to resume
    assert status == 0, err
    assert done == dict.fromkeys(cells, 2)
    assert again == 0, err_again
    assert _files(root) == files
    if ON_GPU:
        assert peak > 0  # the resumed cells ran on the GPU


# -- 5. the paper model's rows of `alpose bench` -----------------------------------------------
def test_paper_model_bench_rows(keep_threads):
    from active.bench import speed as bs

    name, px = "hourglass_paper", 256
    device = torch.device(DEVICE)
    if ON_GPU:
        sizes = bs.default_sizes(px, "cuda")  # what `alpose bench` times on a GPU
        acquirers = {a: sizes for a in ("coreset", "multipeak", "learning_loss")}
        acquirers["egl_pp"] = replace(sizes, pool=16)  # seconds per image: a few images do
    else:  # code paths only: tiny sizes, no EGL++ (minutes on a CPU)
        sizes = bs.default_sizes(px, "cpu", quick=True)
        acquirers = {a: sizes for a in ("coreset", "multipeak", "learning_loss")}
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    data = bs.synthetic_pool(px, max(sizes.pool + sizes.labelled, bs.EGL_NEIGHBOURS + 2) + 8)
    amp = bs.model_and_config(name, device)[1].amp
    rows, errors = [], {}
    steps = [
        ("train", lambda: bs.bench_train(name, data, device, sizes, "batch")),
        ("inference", lambda: bs.bench_inference(name, data, device, sizes)),
    ]
    for acq, acq_sizes in acquirers.items():
        steps.append(
            (
                f"acquire {acq}",
                lambda a=acq, s=acq_sizes: bs.bench_acquirer(a, name, data, device, s),
            )
        )
    for what, step in steps:
        try:
            rows.append(asdict(step()))
        except Exception as exc:  # noqa: BLE001 - one failing row must not lose the others
            errors[what] = f"{type(exc).__name__}: {exc}"
    record(
        model=name,
        amp_bf16=bool(amp and ON_GPU),
        rows=[
            {k: r[k] for k in ("what", "path", "images", "seconds", "images_per_s")} for r in rows
        ],
        errors=errors,
        seconds=time.perf_counter() - t0,
    )
    assert not errors, errors
    assert all(r["images_per_s"] > 0 and np.isfinite(r["images_per_s"]) for r in rows)
    assert all(r["device"] == device.type for r in rows)
