"""``make gpu-check``'s summary (scripts/gpu_check.py) on a machine without a GPU and after a
failure: every check has a line, a skipped-only run says nothing was checked and exits 0."""

from __future__ import annotations

import importlib.util
import json

from helpers.paths import REPO


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_gpu_every_check_skipped_is_a_clean_exit(tmp_path, capsys):
    mod = gpu_check()
    ok = mod.summary(tmp_path, {t: "SKIPPED" for t in mod.CHECKS}, 3.0, False)
    out = capsys.readouterr().out
    assert ok and "nothing was checked" in out
    assert all(label in out for label in mod.CHECKS.values())


def test_a_failed_or_timed_out_check_fails_the_run_and_figures_are_shown(tmp_path, capsys):
    mod = gpu_check()
    first, *rest = mod.CHECKS
    (tmp_path / f"{first}.json").write_text(json.dumps({"seconds": 4.0}))
    statuses = {first: "PASSED", rest[0]: "FAILED"}
    assert not mod.summary(tmp_path, statuses, 9.0, True)
    out = capsys.readouterr().out
    assert "FAILED" in out and "TIMEOUT" in out and "(4 s)" in out
    assert "nothing was checked" not in out
