"""The stored ``config.yaml`` is the identity of a run's results: a folder that holds cells but no
readable config is refused in one line (never given the new command's config), ``fresh=true``
moves it aside, and an invalid YAML there is bad input (exit 2) naming the file."""

from __future__ import annotations

import shutil

import pytest
from helpers.runs import run_in_process, smoke

from hourglass.errors import AlposeError

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

CELL = ["acquirers=[random]", "seeds=[0]", "cycles=1", "threads=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A result folder with one finished cell (random, seed 0, cycles 0 and 1)."""
    runs = tmp_path_factory.mktemp("identity-runs")
    run_in_process(runs, data_dir, *CELL)
    return runs


@pytest.fixture
def runs(finished, tmp_path):
    """A private copy of the finished result folder."""
    copy = tmp_path / "runs"
    shutil.copytree(finished, copy)
    return copy


def one_error_line(status, err):
    assert status == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


def cell_files(root):
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and ".hydra" not in p.parts
    }


@pytest.mark.parametrize("extra", [[], ["model.channels=32"]], ids=["same", "changed"])
def test_missing_config_over_cells_is_refused(cli, runs, data_dir, extra):
    root = runs / "smoke"
    (root / "config.yaml").unlink()
    before = cell_files(root)
    line = one_error_line(*cli(*smoke(runs, data_dir, *CELL, *extra))[::2])
    assert "no config.yaml" in line and "restore" in line and "fresh=true" in line
    assert "_initial/seed_0/state.json" in line
    assert not (root / "config.yaml").exists()  # not replaced by the new command's config
    assert cell_files(root) == before


@pytest.mark.parametrize(
    "text",
    ["name: smoke\nseeds: [0, 1\n", "- just\n- a list\n", "a: ${missing.key}\n"],
    ids=["parse-error", "not-a-mapping", "bad-interpolation"],
)
def test_unreadable_config_is_bad_input_naming_the_file(cli, runs, data_dir, text):
    root = runs / "smoke"
    (root / "config.yaml").write_text(text)
    before = cell_files(root)
    line = one_error_line(*cli(*smoke(runs, data_dir, *CELL))[::2])
    assert str(root / "config.yaml") in line and "restore it" in line and "fresh=true" in line
    assert "unexpected" not in line
    assert cell_files(root) == before
    line = one_error_line(*cli(*smoke(runs, data_dir, *CELL, "--dry-run"))[::2])
    assert str(root / "config.yaml") in line


def test_fresh_moves_a_folder_without_config_aside(cli, runs, data_dir):
    root = runs / "smoke"
    (root / "config.yaml").unlink()
    status, out, err = cli(*smoke(runs, data_dir, *CELL, "fresh=true"))
    assert status == 0, err
    (backup,) = runs.glob("smoke.old-*")
    assert (backup / "_initial" / "seed_0" / "state.json").is_file()
    assert not (backup / "config.yaml").exists()
    assert (root / "config.yaml").is_file() and (
        root / "random" / "seed_0" / "state.json"
    ).is_file()
    assert "moved the previous results" in out


def test_unchanged_rerun_keeps_working(cli, runs, data_dir):
    status, _, err = cli(*smoke(runs, data_dir, *CELL))
    assert status == 0, err


def test_a_folder_without_cells_may_start_afresh(tmp_path):
    from active.loop.run_config import read_stored_config, stored_cells

    (tmp_path / "_initial" / "seed_0").mkdir(parents=True)  # a cell begun, no state.json yet
    assert stored_cells(tmp_path) == []
    assert read_stored_config(tmp_path) is None
    (tmp_path / "_initial" / "seed_0" / "state.json").write_text("{}")
    assert stored_cells(tmp_path) == [tmp_path / "_initial" / "seed_0" / "state.json"]


def test_read_stored_config_refuses_a_directory(tmp_path):
    from active.loop.run_config import read_stored_config

    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(AlposeError, match="config.yaml is not a readable config"):
        read_stored_config(tmp_path)
