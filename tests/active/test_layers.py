"""The package layers hold: import-linter's contracts (pyproject.toml) pass on the code, and each
contract fails on a copy of the code with one import that breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.is_file(), reason="import-linter is not installed")


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold():
    r = lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 kept, 0 broken" in r.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("hourglass/metrics.py", "import active.loop.run_files", "hourglass imports nothing"),
        ("hourglass/metrics.py", "import active.loop.run_files", "layers:"),
        ("active/analysis/stats.py", "import active.cli.table", "nothing imports a command"),
        ("active/loop/run_files.py", "import active.analysis.stats", "layers:"),
        ("active/acquirers/random.py", "import active.loop.workload", "layers:"),
        ("active/cli/table.py", "import active.cli.status", "command modules are independent"),
        ("active/loop/run_files.py", "import active.loop.runner", "no import cycles"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    for package in ("hourglass", "active"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    broken = r.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, r.stdout
