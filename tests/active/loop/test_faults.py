"""Faults: SIGKILL in training, in acquisition and in a state write; a failed (disk-full) write; a
corrupt checkpoint; a changed config. Each one loses nothing finished and ends, after a rerun,
with exactly the numbers of an uninterrupted run (CPU).

The kills use the test-only hook ``ALPOSE_TEST_KILL_AT=point:n`` (``hourglass.io.kill_point``):
the n-th pass of ``train`` (an epoch end), ``acquire`` (after select) or ``state`` (new state.json
written to its temporary file, not yet renamed) SIGKILLs the process. Only the killed runs and
their reruns are subprocesses; the rest runs in-process to keep the file fast.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.paths import REPO
from helpers.runs import results, rows, run_in_process, smoke

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

# One cell: cycle 0 (shared), 1 and 2; one torch thread everywhere (the same sums in every process,
# and less CPU on shared cores).
CELL = ["acquirers=[random]", "seeds=[0]", "threads=1"]


def run(runs, data, *extra, env=None):
    """``alpose run experiment=smoke`` on one cell in a subprocess (``env`` adds variables)."""
    cmd = [sys.executable, str(REPO / "scripts" / "alpose"), *smoke(runs, data, *CELL, *extra)]
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=600)


def state(root):
    return json.loads((root / "random" / "seed_0" / "state.json").read_text())


def one_error_line(stderr):
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run of the cell (in-process)."""
    runs = tmp_path_factory.mktemp("faults-reference")
    run_in_process(runs, data_dir, *CELL)
    return runs / "smoke"


def with_shared_cycle_0(reference, runs):
    """A fresh result folder holding only the reference's finished shared cycle 0."""
    shutil.copytree(reference / "_initial", runs / "smoke" / "_initial")
    shutil.copy2(reference / "config.yaml", runs / "smoke" / "config.yaml")
    return runs / "smoke"


def labelled_after(reference, cycle):
    """The reference cell's labelled set for the cycle after ``cycle`` (initial set plus picks)."""
    initial = json.loads((reference / "_initial" / "seed_0" / "state.json").read_text())
    cell = reference / "random" / "seed_0"
    picks = [np.load(cell / "selections" / f"cycle_{c}.npy")["index"] for c in range(1, cycle + 2)]
    return sorted(set(initial["labelled"]).union(*(set(p.tolist()) for p in picks)))


# point:n -> the cell's last finished cycle at the kill (random, seed 0; cycle 0 is the shared one,
# already done): train:2 = cycle 2's epoch, acquire:2 = the picks for cycle 2 (after cycle 1's
# training), state:3 = the write of the state after cycle 2 (after those of cycles 0 and 1).
@pytest.mark.parametrize("point,finished", [("train:2", 1), ("acquire:2", 0), ("state:3", 1)])
def test_sigkill_then_rerun_resumes_and_matches(reference, tmp_path, data_dir, point, finished):
    root = with_shared_cycle_0(reference, tmp_path)
    killed = run(tmp_path, data_dir, env={"ALPOSE_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cell = root / "random" / "seed_0"
    now = state(root)  # complete, valid JSON: the state of the last finished cycle
    assert now["cycle"] == finished
    assert now["labelled"] == labelled_after(reference, finished)
    done = {f"checkpoints/cycle_{c}.pt" for c in range(1, finished + 1)}
    assert now["checkpoints"] == {k: state(reference)["checkpoints"][k] for k in done}
    ref_rows = rows(reference / "random" / "seed_0" / "metrics.csv")
    assert rows(cell / "metrics.csv")[: finished + 1] == ref_rows[: finished + 1]
    shared = root / "_initial" / "seed_0" / "checkpoints" / "cycle_0.pt"
    stamp = shared.stat().st_mtime_ns
    if point.startswith("state"):
        assert list(cell.glob(".state.json.*.tmp"))  # killed between the write and the rename

    again = run(tmp_path, data_dir)
    assert again.returncode == 0, again.stderr
    assert results(root) == results(reference)
    assert state(root) == {
        **state(reference),
        "acquisition_seconds": state(root)["acquisition_seconds"],
    }
    assert shared.stat().st_mtime_ns == stamp  # the finished shared cycle 0 was not redone
    assert not list(cell.rglob(".*.tmp"))


def test_a_failed_state_write_is_one_line_and_keeps_the_previous_state(
    reference,
    tmp_path,
    data_dir,
    cli,
    monkeypatch,
):
    """The disk fills up when the state after cycle 1 is renamed into place (os.replace)."""
    root = with_shared_cycle_0(reference, tmp_path)
    real, seen = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(os.path.join("random", "seed_0", "state.json")):
            seen.append(dst)
            if len(seen) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    status, _, err = cli(*smoke(tmp_path, data_dir, *CELL))
    assert status == 2
    line = one_error_line(err)
    assert "No space left on device" in line and "state.json" in line
    assert "free disk space" in line and "rerun the same command" in line
    cell = root / "random" / "seed_0"
    assert state(root)["cycle"] == 0  # the previous state, whole
    assert state(root)["labelled"] == labelled_after(reference, 0)
    assert not list(cell.glob(".*.tmp"))
    ref = rows(reference / "random" / "seed_0" / "metrics.csv")
    assert rows(cell / "metrics.csv")[:1] == ref[:1]


def flip_a_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # torch may still load it; the sha256 will not match
    path.write_bytes(bytes(blob))


def test_a_corrupt_checkpoint_is_detected_and_its_cycle_retrained(
    reference, tmp_path, data_dir, cli
):
    root = tmp_path / "smoke"
    shutil.copytree(reference, root)
    cell = root / "random" / "seed_0" / "checkpoints" / "cycle_1.pt"
    shared = root / "_initial" / "seed_0" / "checkpoints" / "cycle_0.pt"
    flip_a_byte(cell)
    flip_a_byte(shared)
    status, _, err = cli(*smoke(tmp_path, data_dir, *CELL))
    assert status == 0, err
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2, err
    assert "_initial/seed_0/checkpoints/cycle_0.pt" in warnings[0] and "from cycle 0" in warnings[0]
    assert "random/seed_0/checkpoints/cycle_1.pt" in warnings[1] and "from cycle 1" in warnings[1]
    for path in (cell, shared):  # retrained to the very same bytes
        assert path.read_bytes() == (reference / path.relative_to(root)).read_bytes()
    assert results(root) == results(reference)
    assert state(root)["checkpoints"] == state(reference)["checkpoints"]


def test_a_changed_config_is_refused_naming_every_differing_key(reference, tmp_path, cli, data_dir):
    root = tmp_path / "smoke"
    shutil.copytree(reference, root)
    before = results(root)
    status, _, err = cli(*smoke(tmp_path, data_dir, *CELL, "epochs_later=3", "train.lr=0.001"))
    assert status == 2
    line = one_error_line(err)
    assert "differs in: epochs_later, train.lr" in line and "fresh=true" in line
    assert results(root) == before


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_file(tmp_path, monkeypatch):
    from hourglass.errors import AlposeError
    from hourglass.io import save_torch, sha256_file

    path = tmp_path / "checkpoints" / "cycle_1.pt"
    digest = save_torch(path, {"model": {"w": torch.ones(3)}})
    assert digest == sha256_file(path)
    before = path.read_bytes()
    real = torch.save

    def fills_the_disk(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(
        AlposeError, match=r"cannot write .*cycle_1\.pt \(No space left on device\)"
    ):
        save_torch(path, {"model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["cycle_1.pt"]  # no temporary left behind
