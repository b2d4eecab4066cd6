"""Stopping a run from outside: SIGTERM or SIGINT to the parent of a ``jobs=2`` run stops its workers (none
outlives it), it exits 143 or 130 with one line, and a rerun ends with the uninterrupted numbers; two
plain ``alpose run`` on one folder train each cell once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.paths import REPO
from helpers.runs import alpose, results, smoke

GATED = "acquirer._target_=tests.helpers.gate_acquirer.GatedRandom"


def session_members(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid`` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: session id; Z: a zombie
            pids.append(int(stat.parent.name))
    return pids


def gated(runs: Path, data: Path, gate: Path, entered: Path) -> list[str]:
    return smoke(
        runs,
        data,
        "acquirers=[random]",
        GATED,
        f"+acquirer.gate={gate}",
        f"+acquirer.entered={entered}",
        "jobs=2",
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted gated run (its gate open from the start)."""
    folder = tmp_path_factory.mktemp("signals-reference")
    gate = folder / "gate"
    gate.touch()
    r = alpose(*gated(folder / "runs", data_dir, gate, folder / "entered"))
    assert r.returncode == 0, r.stderr
    return folder


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("sig", "status", "line"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_stops_the_workers_and_a_rerun_matches(
    reference, tmp_path, data_dir, sig, status, line
):
    gate, entered = tmp_path / "gate", tmp_path / "entered"  # closed until the file exists
    args = gated(tmp_path / "runs", data_dir, gate, entered)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "alpose"), *args]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not entered.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and entered.exists(), "no worker reached the gate"
    assert len(session_members(proc.pid)) >= 3  # the parent and its two workers
    proc.send_signal(sig)  # to the parent alone, as `kill PID` or a scheduler sends it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1].startswith(line)
    deadline = time.monotonic() + 10
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_members(proc.pid), "a worker outlived its parent"

    gate.touch()  # the rerun's acquirer passes its gate at once
    r = alpose(*args)
    assert r.returncode == 0, r.stderr
    assert results(tmp_path / "runs" / "smoke") == results(reference / "runs" / "smoke")


def test_two_runs_on_one_folder_train_each_cell_once(tmp_path, data_dir):
    """Both succeed and the cells' lock files record every cycle once (the other process waited
    on each cell's lock, then found it done)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "scripts" / "alpose"), *smoke(tmp_path / "runs", data_dir)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    root = tmp_path / "runs" / "smoke"
    finished = Counter()
    for lock in root.glob("*/seed_*.lock"):
        for line in lock.read_text().splitlines():
            finished[(lock.parent.name, lock.stem, line.split(":")[0])] += 1
    trained = [k for k in finished if k[0] == "_initial"]
    cells = [k for k in finished if k[0] != "_initial"]
    assert (
        len(trained) == 2 and len(cells) == 2 * 2 * 3
    )  # 2 seeds; 2 acquirers x 2 seeds x 3 cycles
    assert set(finished.values()) == {1}, finished
    ref = tmp_path / "reference"
    r = alpose(*smoke(ref, data_dir))
    assert r.returncode == 0, r.stderr
    assert results(root) == results(ref / "smoke")
