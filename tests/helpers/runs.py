"""``alpose run`` of the smoke experiment, in a subprocess or in this process, and its results."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from active.cli.main import main
from helpers.paths import REPO

TIMING = {"train_seconds", "acquisition_seconds"}


def alpose(*args, wait=True):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "alpose"), *map(str, args)]
    if not wait:
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def smoke(runs, data, *extra):
    return [
        "run",
        "experiment=smoke",
        f"paths.runs={runs}",
        f"paths.data={data}",
        "progress=false",
        *extra,
    ]


def run_in_process(runs, data, *extra) -> None:
    """``alpose run experiment=smoke ...`` in this process; torch's thread count is restored
    (``threads=1`` would otherwise hold for the rest of the session)."""
    threads = torch.get_num_threads()
    try:
        assert main(smoke(runs, data, *extra)) == 0
    finally:
        torch.set_num_threads(threads)


def rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def results(root):
    """Every metrics.csv (timing columns dropped) and every selection file under an experiment."""
    out = {}
    for path in sorted(root.rglob("metrics.csv")):
        out[str(path.relative_to(root))] = rows(path)
    for path in sorted(root.rglob("selections/*.npy")):
        out[str(path.relative_to(root))] = np.load(path).tolist()
    return out


def kill_once_written(proc: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``marker`` exists (the run must still be going then)."""
    deadline = time.time() + timeout
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
