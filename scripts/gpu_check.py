#!/usr/bin/env python3
"""``make gpu-check``: the GPU self-test, then a one-screen summary.

Runs ``pytest -m gpu tests/test_gpu.py`` (tests skipped where ``torch.cuda.is_available()`` is
False). Each test writes its figures to ``<out>/<test>.json`` (``--out``, default
``runs/gpu_check/``); the summary prints pass/fail per check and the figures: the GPU claim, max
|CPU - GPU| acquisition-score differences, EGL++ fast path vs the per-target loop (speed-up,
agreement), the smoke experiment killed and resumed on the GPU, and the paper model's ``alpose
bench`` rows (train with bf16 autocast, inference, acquisition images/s). The tests stop at
``--timeout`` seconds (default 420; the summary is printed from whatever finished), so the whole
command stays under 8 minutes on one GPU.

``ALPOSE_GPU_CHECK_DEVICE=cpu python scripts/gpu_check.py`` runs the same tests on the CPU instead
of skipping them (smaller sizes, no EGL++ bench row): a check of the code paths, not of a GPU.

Exit status: 0 when every check passed, or when there is no GPU and every check skipped cleanly
(the summary says nothing was checked); 1 when a check failed, timed out or did not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = {  # test name -> the summary's label, in the file's order
    "test_claims_every_visible_gpu_then_waits": "GPU claim (one job per GPU)",
    "test_acquisition_scores_on_the_gpu_equal_the_cpus": "acquisition scores GPU = CPU",
    "test_egl_fast_path_matches_the_per_target_loop": "EGL++ fast path = per-target loop",
    "test_smoke_experiment_end_to_end_killed_and_resumed": "smoke run, killed and resumed",
    "test_paper_model_bench_rows": "paper model bench rows",
}
STATUS = re.compile(r"^tests/test_gpu\.py::(\w+)\S* (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)")


def run_tests(out: Path, timeout: float, extra: list[str]) -> tuple[dict[str, str], float, bool]:
    """Run the gpu tests (output streamed); returns (test -> status, seconds, timed out)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rA", "tests/test_gpu.py", *extra]
    env = {**os.environ, "ALPOSE_GPU_CHECK_OUT": str(out), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops its children too
    )
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, stop)
    timer.start()
    statuses: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            match = STATUS.match(line)
            if match:
                statuses.setdefault(match.group(1), match.group(2))
        proc.wait()
    finally:
        timer.cancel()
    return statuses, time.perf_counter() - t0, expired.is_set()


def _num(x: object, digits: int = 3) -> str:
    if not isinstance(x, int | float):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 0.01:
        return f"{x:.{digits}g}"
    return f"{x:.1e}"


def figure_lines(test: str, fig: dict) -> list[str]:
    """The summary lines of one check's figures."""
    lines: list[str] = []
    if test == "test_claims_every_visible_gpu_then_waits":
        lines.append(
            f"{fig.get('gpu') or 'no GPU (fake slots)'}, {fig.get('visible_gpus')} visible; "
            f"torch {fig.get('torch')}, CUDA {fig.get('cuda')}"
        )
    elif test == "test_acquisition_scores_on_the_gpu_equal_the_cpus":
        diffs = fig.get("differences") or {}
        lines.append(
            "max |CPU-GPU| (rel to max score), TF32 off: "
            + ", ".join(f"{k} {_num(v['max_abs'])} ({_num(v['rel'])})" for k, v in diffs.items())
        )
        tf32 = fig.get("with_default_tf32")
        if tf32:
            lines.append(
                "  with torch's default TF32 convolutions: "
                + ", ".join(f"{k} {_num(v['rel'])}" for k, v in tf32.items())
            )
    elif test == "test_egl_fast_path_matches_the_per_target_loop":
        for r in fig.get("rows", []):
            lines.append(
                f"{r['model']} {r['input_px']} px, K={r['targets']}: {r['method']} "
                f"{_num(r['fast_s_per_image'])} s/img vs loop {_num(r['reference_s_per_image'])} "
                f"s/img = {r['speedup']:.1f}x, max rel diff {_num(r['max_rel_diff'])}"
            )
    elif test == "test_smoke_experiment_end_to_end_killed_and_resumed":
        pckh = fig.get("final_pckh") or {}
        lines.append(
            f"killed run {_num(fig.get('seconds_killed_run'))} s (rc {fig.get('killed_returncode')}), "
            f"resume {_num(fig.get('seconds_resume'))} s, rerun {_num(fig.get('seconds_rerun_all_done'))} s; "
            f"peak GPU memory {_num(fig.get('peak_gpu_memory_mb'))} MB"
        )
        if pckh:
            lines.append(
                "  final PCKh: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in pckh.items())
            )
    elif test == "test_paper_model_bench_rows":
        rows = fig.get("rows", [])
        amp = " (bf16)" if fig.get("amp_bf16") else ""
        lines.append(
            "img/s: "
            + ", ".join(
                f"{r['what']}{amp if r['what'] == 'train' else ''} {_num(r['images_per_s'])}"
                for r in rows
            )
        )
        for what, err in (fig.get("errors") or {}).items():
            lines.append(f"  {what}: {err[:100]}")
    return lines


def summary(out: Path, statuses: dict[str, str], seconds: float, timed_out: bool) -> bool:
    """Print the one-screen summary; True when every check passed or every one skipped (no GPU)."""
    figures = {}
    for path in sorted(out.glob("*.json")):
        try:
            figures[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    device = os.environ.get("ALPOSE_GPU_CHECK_DEVICE", "cuda")
    counts: dict[str, int] = {}
    for test in CHECKS:
        status = statuses.get(test, "TIMEOUT" if timed_out else "NOT RUN")
        counts[status] = counts.get(status, 0) + 1
    tally = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    print()
    print(f"=== alpose gpu-check on {device}: {tally}; {seconds:.0f} s ===")
    for test, label in CHECKS.items():
        status = statuses.get(test, "TIMEOUT" if timed_out else "NOT RUN")
        took = figures.get(test, {}).get("seconds")
        took = f" ({took:.0f} s)" if isinstance(took, int | float) else ""
        print(f"{status:8} {label}{took}")
        if test in figures:
            for line in figure_lines(test, figures[test]):
                print(f"         {line}")
    print(f"figures: {out}/*.json")
    if counts.get("SKIPPED") == len(CHECKS):
        print(
            "no CUDA GPU: every check skipped, nothing was checked "
            "(ALPOSE_GPU_CHECK_DEVICE=cpu runs them on the CPU)"
        )
        return True
    return counts.get("PASSED", 0) == len(CHECKS)


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the summary; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_check")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds for all tests")
    args, pytest_args = parser.parse_known_args(argv)  # the rest goes to pytest (e.g. -k smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.json"):  # figures of an earlier check would mislead
        old.unlink()
    statuses, seconds, timed_out = run_tests(args.out, args.timeout, pytest_args)
    if timed_out:
        print(f"\ngpu-check: stopped after {args.timeout:.0f} s (--timeout)")
    return 0 if summary(args.out, statuses, seconds, timed_out) else 1


if __name__ == "__main__":
    sys.exit(main())
