"""The analysis commands on a run folder that cannot be written: ``status`` and ``inspect`` only
read it, ``table --out`` and ``report --out`` write elsewhere (the report's diagnostics beside
its page), and without ``--out`` ``table``/``report`` say in one line to pass it.

The tests run as root here, where chmod alone changes nothing: the commands then run in a child
process whose capability bounding set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so the
folder's mode bits hold for it as for any user. Where even that leaves the folder writable, those
tests skip; the in-process tests below check the ``--out`` routing directly either way.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.paths import REPO
from helpers.runs import run_in_process

CELL = ["acquirers=[random,coreset]", "seeds=[0]", "cycles=1", "threads=1"]
PR_CAPBSET_DROP = 24  # linux/prctl.h
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2  # linux/capability.h


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished smoke run (random and coreset, seed 0, cycles 0 and 1)."""
    runs = tmp_path_factory.mktemp("read-only-runs")
    threads = torch.get_num_threads()
    run_in_process(runs, data_dir, *CELL)
    torch.set_num_threads(threads)
    return runs / "smoke"


def _no_override() -> None:
    """In the child before exec: a root process loses the capabilities that bypass mode bits."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


def _child(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLCONFIGDIR": str(tmp / "mpl")}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_no_override,
    )


def alpose(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess:
    return _child(REPO / "scripts" / "alpose", *args, tmp=tmp)


def _set_modes(root: Path, writable: bool) -> None:
    paths = [root, *root.rglob("*")]
    for p in sorted(paths, key=lambda p: len(p.parts), reverse=writable is False):
        if p.is_dir():
            p.chmod(0o755 if writable else 0o555)
        else:
            p.chmod(0o644 if writable else 0o444)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


@pytest.fixture
def read_only(finished, tmp_path_factory):
    """The finished run folder made unwritable (for the child processes) during one test; skips
    where the mode bits do not bind them."""
    tmp = tmp_path_factory.mktemp("read-only-child")
    _set_modes(finished, writable=False)
    probe = _child("-c", "import os, sys; sys.exit(3 if os.access(sys.argv[1], os.W_OK) else 0)",
                   finished, tmp=tmp)  # fmt: skip
    if probe.returncode != 0:
        _set_modes(finished, writable=True)
        pytest.skip("a folder's mode bits do not stop this user from writing into it")
    yield finished
    _set_modes(finished, writable=True)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_status_reads_it(read_only, tmp_path):
    before = snapshot(read_only)
    proc = alpose("status", read_only, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "done 4 of 4" in proc.stdout
    assert snapshot(read_only) == before


def test_table_writes_to_out(read_only, tmp_path):
    before = snapshot(read_only)
    out = tmp_path / "tables"
    proc = alpose("table", read_only, "--out", out, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "table.md").is_file() and (out / "results.csv").is_file()
    assert snapshot(read_only) == before


def test_table_without_out_says_to_pass_it(read_only, tmp_path):
    before = snapshot(read_only)
    line = one_error_line(alpose("table", read_only, tmp=tmp_path))
    assert "cannot write into" in line and "--out" in line
    assert snapshot(read_only) == before


def test_report_writes_page_and_diagnostics_to_out(read_only, tmp_path):
    before = snapshot(read_only)
    page = tmp_path / "elsewhere" / "page.html"
    proc = alpose("report", read_only, "--out", page, "--device", "cpu", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert page.is_file()
    assert (tmp_path / "elsewhere" / "page_diagnostics" / "overlap.csv").is_file()
    assert snapshot(read_only) == before


def test_report_without_out_says_to_pass_it(read_only, tmp_path):
    before = snapshot(read_only)
    line = one_error_line(alpose("report", read_only, "--no-rescore", tmp=tmp_path))
    assert "cannot write into" in line and "--out" in line
    assert snapshot(read_only) == before


def test_inspect_reads_it(read_only, tmp_path):
    before = snapshot(read_only)
    args = ["--acquirer", "coreset", "--seed", "0", "--cycle", "1", "--device", "cpu"]
    proc = alpose("inspect", read_only, *args, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "coreset" in proc.stdout
    assert snapshot(read_only) == before


# -- the --out routing, in this process (no read-only folder needed) -----------------------------
def test_report_out_elsewhere_leaves_the_run_folder_alone(cli, finished, tmp_path):
    before = snapshot(finished)
    page = tmp_path / "page.html"
    status, out, err = cli("report", finished, "--out", page, "--no-rescore", "--device", "cpu")
    assert status == 0, err
    assert not (finished / "_diagnostics").exists()
    assert (tmp_path / "page_diagnostics" / "timing.csv").is_file()
    assert str(tmp_path / "page_diagnostics") in out
    assert snapshot(finished) == before


def test_report_out_in_a_folder_writes_report_html_there(cli, finished, tmp_path):
    status, _, err = cli("report", finished, "--out", tmp_path, "--no-rescore", "--device", "cpu")
    assert status == 0, err
    assert (tmp_path / "report.html").is_file() and (tmp_path / "report_diagnostics").is_dir()
    assert not (finished / "_diagnostics").exists()


@pytest.mark.parametrize("command", ["table", "report"])
def test_unwritable_run_folder_without_out_is_one_line(cli, finished, monkeypatch, command):
    import active.analysis.run_diagnostics as rd

    real = os.access
    monkeypatch.setattr(
        rd.os, "access", lambda p, mode: False if Path(p) == finished else real(p, mode)
    )
    status, _, err = cli(command, finished)
    assert status == 2, err
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert line.startswith("error: cannot write into") and "--out" in line
