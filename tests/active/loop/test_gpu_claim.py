"""GPU claims (active/loop/gpu_claim.py): N fake GPUs handed to 2N jobs of unequal length (real processes)
never put two jobs on one GPU and never leave a job waiting while a GPU is free; a job-number % N
assignment fails the same check. No timing: jobs hold their GPU until the test releases them
(files), and every wait is bounded only to turn a deadlock into a failure."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from active.loop.gpu_claim import claim_gpu, claimed_device, slot_names

BOUND = 120.0  # seconds: only a deadlock gets there


def _bounded(done, what: str, bound: float = BOUND):
    """Poll ``done()`` until it returns something truthy; fail after ``bound`` s (a deadlock)."""
    deadline = time.monotonic() + bound
    while not (value := done()):
        if time.monotonic() > deadline:
            raise AssertionError(f"deadlock: still waiting for {what} after {bound:.0f} s")
        time.sleep(0.005)
    return value


def _log(path: Path, *fields: object) -> None:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(" ".join(map(str, fields)) + "\n")


def _events(path: Path) -> list[tuple]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(r[0], int(r[1]), *(int(x) for x in r[2:])) for r in rows]


def _job(lock_dir: str, n: int, log: str, release: str, job: int) -> None:
    """One fake job: claim a slot, say so, hold it until the test's release file appears."""
    log_path = Path(log)
    _log(log_path, "claim", job)
    with claim_gpu(
        Path(lock_dir),
        n,
        ids=[str(i) for i in range(n)],
        host="testhost",
        poll=0.005,
        on_wait=lambda _line: _log(log_path, "wait", job),
    ) as slot:
        _log(log_path, "start", job, slot)
        # (bounded beyond the test's own waits, so that the test reports a deadlock first)
        released = (Path(release) / str(job)).exists
        _bounded(released, f"the release of job {job}", 3 * BOUND)
        _log(log_path, "end", job, slot)  # before the slot is released


def check_schedule(events: list[tuple], n: int) -> list[str]:
    """Violations in a log of (``wait``/``start``/``end``, job[, slot]) events in log order: a job
    started on a held slot, or a slot freed while jobs waited and not taken by the next start."""
    holder: dict[int, int] = {}
    waiting: set[int] = set()
    bad: list[str] = []
    freed: tuple[int, list[int]] | None = None  # (slot, waiting jobs) at an end
    for kind, job, *rest in events:
        if freed is not None and kind in ("start", "end"):
            if not (kind == "start" and rest[0] == freed[0]):
                bad.append(f"slot {freed[0]} stayed free while jobs {freed[1]} waited")
            freed = None
        if kind == "wait":
            waiting.add(job)
        elif kind == "start":
            if rest[0] in holder:
                bad.append(f"job {job} started on slot {rest[0]} held by job {holder[rest[0]]}")
            holder[rest[0]] = job
            waiting.discard(job)
        elif kind == "end":
            holder.pop(rest[0], None)
            if waiting:
                freed = (rest[0], sorted(waiting))
    if freed is not None:
        bad.append(f"slot {freed[0]} stayed free while jobs {freed[1]} waited")
    return bad


def modulo_schedule(lengths: list[int], n: int) -> list[tuple]:
    """The event log of job-number % n assignment (each job queues for its own slot)."""
    free_at = [0] * n
    timed = []
    for job, length in enumerate(lengths):
        slot = job % n
        start = free_at[slot]
        free_at[slot] = start + length
        if start > 0:
            timed.append((0, 2, ("wait", job)))
        timed.append((start, 1, ("start", job, slot)))
        timed.append((start + length, 0, ("end", job, slot)))
    return [e for _, _, e in sorted(timed, key=lambda t: (t[0], t[1]))]


N = 3
LENGTHS = [5, 1, 2, 1, 3, 2]  # 2N jobs of unequal length (virtual time units)


def test_checker_flags_a_job_number_modulo_assignment():
    events = modulo_schedule(LENGTHS, N)
    # jobs 4 and 5 end at t=4 on slots 1 and 2 while job 3 still waits for job 0's slot 0 (t=5)
    assert check_schedule(events, N) == [
        "slot 1 stayed free while jobs [3] waited",
        "slot 2 stayed free while jobs [3] waited",
    ]
    # the same lengths handed out first-free-slot (what claim_gpu does) pass the check
    greedy = [
        ("start", 0, 0), ("start", 1, 1), ("start", 2, 2), ("wait", 3), ("wait", 4), ("wait", 5),
        ("end", 1, 1), ("start", 3, 1), ("end", 3, 1), ("start", 4, 1), ("end", 2, 2),
        ("start", 5, 2), ("end", 4, 1), ("end", 5, 2), ("end", 0, 0),
    ]  # fmt: skip
    assert check_schedule(greedy, N) == []


def test_n_fake_gpus_for_2n_jobs_of_unequal_length(tmp_path):
    log, release, lock_dir = tmp_path / "events.log", tmp_path / "release", tmp_path / "gpus"
    release.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_job, args=(str(lock_dir), N, str(log), str(release), j))
        for j in range(2 * N)
    ]
    try:

        def kinds(kind):
            return [e for e in _events(log) if e[0] == kind]

        for p in procs[:N]:  # jobs 0..N-1 first: each gets a GPU
            p.start()
        _bounded(lambda: len(kinds("start")) == N, "N jobs on N GPUs")
        for p in procs[N:]:  # then N more: each has to wait
            p.start()
        _bounded(lambda: len(kinds("wait")) == N, "N waiting jobs")
        # virtual time: the running job that finishes first is released first
        clock, ends, released = 0, {}, 0
        for _, job, _slot in kinds("start"):
            ends[job] = LENGTHS[job]
        while ends:
            job = min(ends, key=lambda j: (ends[j], j))
            clock = ends.pop(job)
            seen = {e[1] for e in kinds("start")}
            (release / str(job)).touch()
            released += 1
            want = min(2 * N, N + released)  # a waiting job takes the freed GPU

            def settled(job=job, want=want):
                return any(e[1] == job for e in kinds("end")) and len(kinds("start")) == want

            _bounded(settled, f"a waiting job on the GPU job {job} freed")
            for _, new, _slot in kinds("start"):
                if new not in seen:
                    ends[new] = clock + LENGTHS[new]
        for p in procs:
            p.join(BOUND)
        assert [p.exitcode for p in procs] == [0] * (2 * N)
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.kill()
    events = [e for e in _events(log) if e[0] != "claim"]
    assert sorted(e[1] for e in events if e[0] == "end") == list(range(2 * N))
    assert check_schedule(events, N) == []
    assert {e[2] for e in events if e[0] == "start"} == set(range(N))


def test_a_third_claim_waits_once_and_takes_the_freed_gpu(tmp_path):
    lines, waited = [], threading.Event()

    def on_wait(line):
        lines.append(line)
        waited.set()

    got = []
    with claim_gpu(tmp_path, 2, ids=["0", "1"], on_wait=on_wait) as a:
        with claim_gpu(tmp_path, 2, ids=["0", "1"], on_wait=on_wait) as b:
            assert (a, b) == (0, 1) and not lines

            def third():
                with claim_gpu(tmp_path, 2, ids=["0", "1"], poll=0.005, on_wait=on_wait) as c:
                    got.append(c)

            t = threading.Thread(target=third)
            t.start()
            assert waited.wait(BOUND)
        t.join(BOUND)  # b freed slot 1
        assert not t.is_alive() and got == [1]
    assert len(lines) == 1 and lines[0].startswith("  waiting for a free GPU: all 2 in use")
    holder = (tmp_path / slot_names(2, ["0", "1"])[1]).read_text()
    assert holder.startswith(f"pid {os.getpid()} on ")


def _hold_forever(lock_dir: str, ready: str) -> None:
    with claim_gpu(Path(lock_dir), 1, ids=["0"]):
        Path(ready).touch()
        while True:
            time.sleep(1)


def test_a_killed_job_frees_its_gpu(tmp_path):
    ready = tmp_path / "ready"
    p = multiprocessing.get_context("spawn").Process(
        target=_hold_forever, args=(str(tmp_path), str(ready))
    )
    p.start()
    _bounded(ready.exists, "the holder's claim")
    with pytest.raises(AssertionError), claim_gpu(tmp_path, 1, ids=["0"], on_wait=_raise):
        pass  # held: the claim would wait
    os.kill(p.pid, signal.SIGKILL)
    p.join(BOUND)
    with claim_gpu(tmp_path, 1, ids=["0"], on_wait=_raise) as slot:
        assert slot == 0  # no wait: the lock went with the process


def _raise(line: str) -> None:
    raise AssertionError(line)


def test_slots_are_named_by_host_and_physical_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-ab:cd")
    assert slot_names(2, host="node1") == ["gpu_node1_3.lock", "gpu_node1_GPU-ab_cd.lock"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert slot_names(2, host="n") == ["gpu_n_0.lock", "gpu_n_1.lock"]
    # two nodes sharing one lock folder (NFS) never block each other
    with (
        claim_gpu(tmp_path, 1, host="a", on_wait=_raise) as x,
        claim_gpu(tmp_path, 1, host="b", on_wait=_raise) as y,
    ):
        assert (x, y) == (0, 0)


def test_claimed_device_only_claims_for_auto_or_cuda_with_gpus(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # fake GPUs: no set_device
    for device, n in [("cpu", 2), ("cuda:1", 2), ("auto", 0)]:
        with claimed_device(device, n_gpus=n, lock_dir=tmp_path / "x") as got:
            assert got == device
    assert not (tmp_path / "x").exists()  # nothing claimed
    with (
        claimed_device("auto", n_gpus=2, lock_dir=tmp_path) as first,
        claimed_device("cuda", n_gpus=2, lock_dir=tmp_path) as second,
    ):
        assert (first, second) == ("cuda:0", "cuda:1")
    monkeypatch.setenv("ALPOSE_GPU_CLAIM", "off")
    with claimed_device("auto", n_gpus=2, lock_dir=tmp_path / "y") as got:
        assert got == "auto" and not (tmp_path / "y").exists()


def test_release_empties_the_cuda_cache(tmp_path, monkeypatch):
    import torch

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    with claim_gpu(tmp_path, 1, ids=["0"]):
        assert not emptied
    assert emptied == [True]
