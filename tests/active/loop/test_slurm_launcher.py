"""``hydra/launcher=slurm`` without a cluster: a fake ``sinfo`` on PATH makes ``alpose run -m``
refuse a request before anything is submitted, and fake submitit jobs show how failed and killed
jobs are reported (each its overrides and one short line naming its log; the sweep exits 2).
The real cluster's version of the second is tests/active/loop/test_slurm.py."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.runs import alpose, smoke

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

from hydra.core.utils import JobReturn, JobStatus  # noqa: E402
from submitit.core.utils import UncompletedJobError  # noqa: E402

from active.loop.job import JobFailed  # noqa: E402
from active.loop.slurm_launcher import checked_slurm_launcher, collect  # noqa: E402
from hourglass.errors import AlposeError  # noqa: E402


def fake_commands(folder: Path) -> Path:
    """``sinfo`` listing one 2-CPU node without GPUs; ``sbatch`` that records being called."""
    folder.mkdir()
    (folder / "sinfo").write_text("#!/bin/sh\necho 'debug*|vm|2|24105|(null)'\n")
    (folder / "sbatch").write_text(
        f"#!/bin/sh\ntouch {folder}/sbatch-called\necho 'sbatch: error: Batch job submission "
        "failed: Invalid account' >&2\nexit 1\n"
    )
    for name in ("sinfo", "sbatch"):
        (folder / name).chmod(0o755)
    return folder


def test_a_request_the_cluster_cannot_meet_is_refused_before_submitting(tmp_path, monkeypatch):
    bin_dir = fake_commands(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = smoke(tmp_path / "runs", tmp_path / "data", "acquirer=random,coreset", "seed=0")
    args[1:1] = ["-m", "hydra/launcher=slurm"]  # the launcher's defaults: 1 GPU, 8 CPUs, 48 GB
    done = alpose(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: hydra.launcher.gpus_per_node=1 asks for 1 GPU per node, but the nodes of "
        "partition 'debug' have at most 0; set hydra.launcher.gpus_per_node=0 (the jobs then "
        "train on the CPU), or choose a partition with GPUs (hydra.launcher.partition)"
    ]
    assert not (bin_dir / "sbatch-called").exists()
    done = alpose(*args, "hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=gpu")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: SLURM has no partition 'gpu' (partitions: debug); "
        "set hydra.launcher.partition to one of them"
    )
    assert not (bin_dir / "sbatch-called").exists()


def test_a_request_sbatch_refuses_is_one_line(tmp_path, monkeypatch):
    bin_dir = fake_commands(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = smoke(tmp_path / "runs", tmp_path / "data", "acquirer=random,coreset", "seed=0")
    small = ["hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1"]
    done = alpose(
        args[0], "-m", "hydra/launcher=slurm", *small, "hydra.launcher.mem_gb=2", *args[1:]
    )
    assert done.returncode == 2, done.stderr
    assert (bin_dir / "sbatch-called").exists()
    assert done.stderr.strip().splitlines() == [
        "error: sbatch refused the jobs (sbatch: error: Batch job submission failed: Invalid "
        "account); check the request: hydra.launcher.partition, gpus_per_node, cpus_per_task, "
        "mem_gb, timeout_min"
    ]


class FakeJob:
    """A submitit job that has ended: its result, or SLURM's final state without one."""

    def __init__(self, number: int, result=None, state: str = "COMPLETED") -> None:
        self.job_id = f"7_{number}"
        self.paths = SimpleNamespace(
            stderr=Path(f"/runs/.submitit/7_{number}/7_{number}_0_log.err")
        )
        self.state, self.result = state, result

    def results(self):
        if self.result is None:
            raise UncompletedJobError("Job 7_1 has not produced any output\n" + "tqdm " * 20000)
        return [self.result]


def job_return(status: JobStatus, value) -> JobReturn:
    ret = JobReturn()
    ret.status, ret.return_value = status, value
    return ret


def test_every_failed_job_is_its_overrides_and_one_line(capsys):
    jobs = [
        FakeJob(0, job_return(JobStatus.COMPLETED, None)),
        FakeJob(1, state="CANCELLED by 0"),
        FakeJob(2, job_return(JobStatus.FAILED, JobFailed("error: no seeds to run: set seeds"))),
        FakeJob(3, job_return(JobStatus.FAILED, RuntimeError("boom " * 500))),
        FakeJob(4, state="TIMEOUT"),
    ]
    overrides = [[f"acquirer=a{i}", "seed=0"] for i in range(5)]
    with pytest.raises(JobFailed) as last:
        collect(jobs, overrides)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "Error executing job with overrides: ['acquirer=a1', 'seed=0']",
        "error: SLURM job 7_1 ended CANCELLED before its cell finished "
        "(log: /runs/.submitit/7_1/7_1_0_log.err); rerun the same command to resume it",
        "Error executing job with overrides: ['acquirer=a2', 'seed=0']",
        "error: no seeds to run: set seeds",
        "Error executing job with overrides: ['acquirer=a3', 'seed=0']",
        lines[5],
        "Error executing job with overrides: ['acquirer=a4', 'seed=0']",
    ]
    assert lines[5].startswith("error: SLURM job 7_3 failed: unexpected RuntimeError: boom boom")
    assert lines[5].endswith(
        "(log: /runs/.submitit/7_3/7_3_0_log.err); rerun with `alpose --verbose ...` to put the "
        "traceback there"
    )
    assert len(lines[5]) < 500
    assert str(last.value) == (
        "SLURM job 7_4 ended TIMEOUT before its cell finished (log: "
        "/runs/.submitit/7_4/7_4_0_log.err); raise hydra.launcher.timeout_min, then rerun the "
        "same command to resume it"
    )


def test_jobs_that_all_succeed_return_their_results(capsys):
    rets = [job_return(JobStatus.COMPLETED, i) for i in range(2)]
    assert collect([FakeJob(0, rets[0]), FakeJob(1, rets[1])], [["a=0"], ["a=1"]]) == rets
    assert capsys.readouterr().err == ""


def test_the_plugins_launch_is_replaced_only_inside(monkeypatch):
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    (cls,) = [c for c in Plugins.instance().discover(Launcher) if c.__name__ == "SlurmLauncher"]
    before = cls.launch
    plugin = cls.__new__(cls)  # no Hydra context needed: the check comes before anything else
    plugin.config, plugin.params = object(), {}
    monkeypatch.setenv("PATH", "/nonexistent")
    with checked_slurm_launcher():
        assert cls.launch is not before
        with pytest.raises(AlposeError, match="needs the SLURM commands"):
            cls.launch(plugin, [["a=0"]], 0)
    assert cls.launch is before
