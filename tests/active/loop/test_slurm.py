"""A sweep on a real SLURM cluster (``hydra/launcher=slurm``): one job is cancelled with
``scancel`` in the middle of its cycle 2; the sweep reports it as that job's overrides plus one
short ``error:`` line naming its log (exit 2), and rerunning the same command finishes the cell
with the numbers of a sweep that was never interrupted.

Needs an idle SLURM node with accounting (``scripts/slurm_cluster.sh up`` starts a single-node
cluster as root on Debian); skipped otherwise. About two minutes on 2 cores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers.runs import alpose

pytestmark = pytest.mark.slurm

# Small jobs that fit the single-node test cluster; cycles long enough (200 epochs each) that a
# job can be cancelled in the middle of one. threads=1: thread counts change core-set's numbers.
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
]
CELLS = ["experiment=smoke", "acquirer=random,coreset", "seed=0", "threads=1", "epochs_later=200"]
KILLED = "coreset"  # the sweep's job #1 (Hydra numbers the jobs in the order of the values)
ERROR = re.compile(
    r"error: SLURM job (\d+_1) ended CANCELLED before its cell finished \(log: (\S+)\); "
    r"rerun the same command to resume it"
)


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skip, with one reason, unless ``sinfo`` shows an idle node."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="alpose[slurm] missing")
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM cluster: sinfo is not on PATH (scripts/slurm_cluster.sh up)")
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or "idle" not in done.stdout.split():
        said = ((done.stdout + done.stderr).strip().splitlines() or ["nothing"])[-1][:120]
        pytest.skip(f"no idle SLURM node (sinfo -h -o %t: {said}; scripts/slurm_cluster.sh up)")


def sweep_args(runs: Path, data: Path) -> list[str]:
    return ["run", "-m", *LAUNCHER, *CELLS, f"paths.runs={runs}", f"paths.data={data}"]


def results(runs: Path) -> str:
    """``results.csv`` of ``alpose table``: every cell's PCKh by cycle and the hashes of its
    picks and weights (no timings)."""
    done = alpose("table", runs / "smoke")
    assert done.returncode == 0, done.stderr
    return (runs / "smoke" / "results.csv").read_text()


def cycle_of(cell: Path) -> int:
    try:
        return json.loads((cell / "state.json").read_text())["cycle"]
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet
        return -1


def test_a_cancelled_job_is_one_line_and_its_rerun_gives_the_uninterrupted_numbers(
    cluster, tmp_path
):
    data = tmp_path / "data"
    killed = tmp_path / "killed"
    cell = killed / "smoke" / KILLED / "seed_0"
    sweep = alpose(*sweep_args(killed, data), wait=False)
    deadline = time.monotonic() + 480
    while cycle_of(cell) < 1:  # state.json is written last: cycle 1 is saved
        assert sweep.poll() is None, (
            f"the sweep ended before cycle 1 was saved: {sweep.stderr.read()}"
        )
        assert time.monotonic() < deadline, "cycle 1 of the cell was not saved in 8 min"
        time.sleep(0.2)
    submitit = killed / "smoke" / ".hydra" / "multirun" / ".submitit"
    (job_dir,) = submitit.glob("*_1")
    subprocess.run(["scancel", job_dir.name], check=True, timeout=60)
    _, err = sweep.communicate(timeout=600)

    assert cycle_of(cell) == 1, "the cell finished cycle 2 before it was cancelled"
    assert sweep.returncode == 2, err
    lines = err.strip().splitlines()
    overrides = [
        *(o.replace("random,coreset", KILLED) for o in CELLS),
        f"paths.runs={killed}",
        f"paths.data={data}",
    ]
    assert lines[-2] == f"Error executing job with overrides: {overrides}", err
    match = ERROR.fullmatch(lines[-1])
    assert match, err
    assert match[1] == job_dir.name
    log = Path(match[2])
    assert log.is_file() and log.parent == job_dir
    assert len(lines[-1]) < 300 and len(err) < 2000 and "Traceback" not in err  # not the log

    rerun = alpose(*sweep_args(killed, data))
    assert rerun.returncode == 0, rerun.stderr
    assert cycle_of(cell) == 2

    reference = tmp_path / "reference"
    whole = alpose(*sweep_args(reference, data))
    assert whole.returncode == 0, whole.stderr
    assert results(killed) == results(reference)
