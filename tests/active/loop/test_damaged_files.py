"""Damaged result files never give a wrong table: a rerun finds every damaged or short file
(``metrics.csv`` rows, selections, ``state.json``) and redoes what it must with one warning, so it
ends with the uninterrupted numbers; what cannot be repaired is refused in one line; ``alpose
table`` and ``alpose status`` leave a malformed row out instead of reading it as a budget."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers.runs import alpose, results, smoke

CELL = ("acquirers=[random]", "seeds=[0]")  # one cell, cycles 0-2


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("damage-reference")
    r = alpose(*smoke(runs, data_dir, *CELL))
    assert r.returncode == 0, r.stderr
    return runs


def damaged_copy(reference, tmp_path):
    """A copy of the finished reference run and its one cell folder."""
    runs = tmp_path / "runs"
    shutil.copytree(reference, runs)
    return runs, runs / "smoke" / "random" / "seed_0"


def rerun_matches(runs, reference, data_dir, *warned):
    r = alpose(*smoke(runs, data_dir, *CELL))
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and all(w in warnings[0] for w in warned), r.stderr
    assert results(runs / "smoke") == results(reference / "smoke")
    return r


def test_a_metrics_file_cut_to_its_first_row_is_redone(reference, tmp_path, data_dir):
    runs, cell = damaged_copy(reference, tmp_path)
    lines = (cell / "metrics.csv").read_text().splitlines(keepends=True)
    (cell / "metrics.csv").write_text("".join(lines[:2]))  # header and cycle 0
    status = alpose("status", runs / "smoke")
    assert status.returncode == 0 and "1/3" in status.stdout, status.stdout
    rerun_matches(runs, reference, data_dir, "no row for cycle 1", "redoing from cycle 1")
    assert "3/3" in alpose("status", runs / "smoke").stdout


def test_a_row_cut_short_is_left_out_of_the_table_and_redone(reference, tmp_path, data_dir):
    runs, cell = damaged_copy(reference, tmp_path)
    text = (cell / "metrics.csv").read_text()
    (cell / "metrics.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + "2,4\n")
    table = alpose("table", runs / "smoke", "--out", tmp_path / "table")
    assert table.returncode == 0, table.stderr
    assert "malformed row" in table.stderr
    budgets = (tmp_path / "table" / "table.csv").read_text().splitlines()[0]
    assert ",4," not in budgets + "," and "4" not in budgets.split(",")  # no invented budget 4
    status = alpose("status", runs / "smoke")
    assert "2/3" in status.stdout, status.stdout  # status and table agree: cycle 2 is not done
    rerun_matches(runs, reference, data_dir, "malformed row for cycle 2", "redoing from cycle 2")


def test_a_selection_whose_bytes_changed_is_redone(reference, tmp_path, data_dir):
    runs, cell = damaged_copy(reference, tmp_path)
    path = cell / "selections" / "cycle_2.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    rerun_matches(runs, reference, data_dir, "cycle_2.npy", "redoing from cycle 1")


def test_a_row_whose_numbers_changed_is_redone(reference, tmp_path, data_dir):
    runs, cell = damaged_copy(reference, tmp_path)
    lines = (cell / "metrics.csv").read_text().splitlines(keepends=True)
    cells = lines[2].split(",")
    cells[2] = "99.0"  # cycle 1's pckh_standard, still a number
    lines[2] = ",".join(cells)
    (cell / "metrics.csv").write_text("".join(lines))
    rerun_matches(runs, reference, data_dir, "differs from the one state.json recorded")


def test_a_state_counting_cycles_beyond_the_plan_is_repaired(reference, tmp_path, data_dir):
    runs, cell = damaged_copy(reference, tmp_path)
    state = json.loads((cell / "state.json").read_text())
    (cell / "state.json").write_text(json.dumps({**state, "cycle": 7}))
    rerun_matches(runs, reference, data_dir, "beyond the plan")
    assert json.loads((cell / "state.json").read_text())["cycle"] == 2


@pytest.mark.parametrize(
    "content", ['{"cycle": "two"}', '{"cycle": 1, "labelled": [1, "x"]}', "[1, 2]", "{not json"]
)
def test_a_state_of_the_wrong_shape_is_one_line(reference, tmp_path, data_dir, content):
    runs, cell = damaged_copy(reference, tmp_path)
    (cell / "state.json").write_text(content)
    r = alpose(*smoke(runs, data_dir, *CELL))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "state.json" in lines[0]
    assert "Traceback" not in r.stderr


def test_a_cell_made_by_another_config_is_refused(reference, tmp_path, data_dir):
    """Even when config.yaml was replaced to match: each cell's state.json names its config."""
    runs, cell = damaged_copy(reference, tmp_path)
    config = runs / "smoke" / "config.yaml"
    config.write_text(config.read_text().replace("channels: 16", "channels: 32"))
    r = alpose(*smoke(runs, data_dir, *CELL, "model.channels=32"))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error:") and "made by another config" in line


def test_the_table_of_a_run_with_a_cut_selection_file_is_one_line(reference, tmp_path):
    runs, cell = damaged_copy(reference, tmp_path)
    path = cell / "selections" / "cycle_1.npy"
    path.write_bytes(path.read_bytes()[:20])
    r = alpose("table", runs / "smoke", "--out", tmp_path / "table")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error:") and "cycle_1.npy" in line
