"""``alpose run`` into a runs folder it cannot write: one ``error:`` line naming the folder and
what to do (exit 2), not Hydra's ``Unable to configure handler 'file'`` or a traceback.

chmod does not stop root, so the tests skip where the folder stays writable after it (run them
as another user, or as root inside ``unshare --user``).
"""

from __future__ import annotations

import os

import pytest
from helpers.runs import alpose, smoke


@pytest.fixture
def read_only(tmp_path):
    """Make folders read-only (``read_only(path)``); skip where that does not stop writing;
    writable again afterwards, so that pytest can remove them."""
    made = []

    def make(path):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        made.append(path)
        if os.access(path, os.W_OK):
            pytest.skip(
                "chmod does not stop this user writing (root): cannot test a read-only folder"
            )
        return path

    yield make
    for path in made:
        path.chmod(0o755)


def only_error_line(done):
    assert done.returncode == 2, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_read_only_runs_folder(tmp_path, read_only):
    runs = read_only(tmp_path / "runs")
    line = only_error_line(alpose(*smoke(runs, tmp_path / "data")))
    assert line == (
        f"error: cannot write to {runs} (Permission denied), where Hydra keeps this run's log; "
        "make that folder writable, or set paths.runs to a writable folder"
    )


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_a_read_only_log_folder_of_an_earlier_run(tmp_path, read_only, multirun):
    runs = tmp_path / "runs"
    (runs / "smoke").mkdir(parents=True)
    logs = read_only(runs / "smoke" / ".hydra")  # Hydra's log folder (hydra.run.dir)
    args = smoke(runs, tmp_path / "data")
    if multirun:
        args.insert(1, "-m")
    line = only_error_line(alpose(*args))
    assert line.startswith(f"error: cannot write to {logs} (Permission denied)"), line
    assert "Unable to configure handler" not in line
    assert line.endswith("set paths.runs to a writable folder"), line
