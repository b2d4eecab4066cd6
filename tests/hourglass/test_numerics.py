"""Portable CPU numerics: the smoke experiment's golden numbers, the same weights with AVX-512
forbidden, the recorded environment and its resume warning, the lock file."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from active.analysis.fingerprint import fingerprint, first_difference, read_csv
from hourglass import numerics
from hourglass.environment import changes, cpu_level

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "smoke.csv"
# What a CPU without AVX-512 gives every library, written out here rather than taken from
# hourglass.numerics, so that a limit missing there shows up as different weights.
NO_AVX512 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL",
}
HAS_AVX512 = "avx512f" in numerics.cpu_flags()
portable_cpu = pytest.mark.skipif(
    cpu_level() not in {"x86-64-v3", "x86-64-v4"},
    reason=f"portable numerics is defined on x86-64 CPUs with AVX2; this one is {cpu_level()}",
)


def _golden_module():
    spec = importlib.util.spec_from_file_location("golden", REPO / "scripts" / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smoke_subprocess(tmp_path: Path, env: dict[str, str], *extra: str) -> list[dict[str, str]]:
    """The golden run's command line in a fresh process with ``env`` (the portable variables of
    this test process removed first); returns the run's fingerprint."""
    clean = {k: v for k, v in os.environ.items() if k not in numerics.portable_env()}
    clean.pop(numerics.MODE_ENV, None)
    cmd = [sys.executable, "-m", "active.cli", "run", *_golden_module().OVERRIDES, *extra]
    cmd += [f"paths.runs={tmp_path}/runs", f"paths.data={tmp_path}/data"]
    done = subprocess.run(
        cmd, env={**clean, **env}, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return fingerprint(tmp_path / "runs" / "smoke")


@portable_cpu
def test_smoke_numbers_match_the_golden_file(tmp_path):
    """The smoke experiment under the default (portable) numerics gives the committed numbers,
    cell by cell: PCKh, the picked images and the weights. After a deliberate change to the
    numbers run ``python scripts/golden.py`` and commit tests/golden/smoke.csv with it."""
    import torch

    threads = torch.get_num_threads()
    try:
        rows = _golden_module().run_smoke(tmp_path)
    finally:
        torch.set_num_threads(threads)
    diff = first_difference(read_csv(GOLDEN), rows)
    assert diff is None, f"{diff}; if the change is deliberate, run `python scripts/golden.py`"


@portable_cpu
def test_same_weights_with_avx512_forbidden(tmp_path):
    """A machine without AVX-512 (simulated: every library held to AVX2 from outside, alpose's
    own limits off) trains the weights of the golden file."""
    rows = _smoke_subprocess(tmp_path, {**NO_AVX512, "ALPOSE_NUMERICS": "native"}, "threads=1")
    assert first_difference(read_csv(GOLDEN), rows) is None


@pytest.mark.skipif(not HAS_AVX512, reason="this CPU has no AVX-512: native is portable here")
def test_native_numerics_differ_on_an_avx512_cpu(tmp_path):
    """The check above can fail: with AVX-512 kernels allowed, the same run trains other weights
    on this CPU (so the golden file really pins the kernels)."""
    rows = _smoke_subprocess(tmp_path, {}, "numerics=native", "threads=1")
    golden = {(r["acquirer"], r["seed"], r["cycle"]): r["weights"] for r in read_csv(GOLDEN)}
    ours = {(r["acquirer"], r["seed"], r["cycle"]): r["weights"] for r in rows}
    assert ours.keys() == golden.keys()
    assert ours[("_initial", "0", "0")] != golden[("_initial", "0", "0")]


def test_first_difference_names_the_cell_and_field():
    rows = read_csv(GOLDEN)
    changed = [dict(r) for r in rows]
    changed[3]["pckh_standard"] = "99.0"
    cell = f"{rows[3]['acquirer']} seed {rows[3]['seed']} cycle {rows[3]['cycle']}"
    assert first_difference(rows, changed) == (
        f"cell {cell}: pckh_standard 99.0 (golden: {rows[3]['pckh_standard']})"
    )
    assert (
        first_difference(rows, rows[:-1])
        == f"{len(rows) - 1} cells, the golden file has {len(rows)}"
    )
    assert first_difference(rows, [dict(r) for r in rows]) is None


def test_requested_mode_from_the_command_line(monkeypatch):
    monkeypatch.delenv(numerics.MODE_ENV, raising=False)
    assert numerics.requested(["experiment=smoke"]) == "portable"
    assert numerics.requested(["numerics=native", "seed=1"]) == "native"
    assert numerics.requested(["++numerics=native", "numerics=portable"]) == "portable"
    monkeypatch.setenv(numerics.MODE_ENV, "native")
    assert numerics.requested([]) == "native"
    with pytest.raises(Exception, match="numerics=portable or numerics=native"):
        numerics.check_mode("fast")


def test_portable_variables_follow_the_cpu():
    v3 = set(numerics.V3_FLAGS)
    assert numerics.portable_env(v3) == numerics.LIMITS  # AVX2 CPU: no AVX-512 switches
    full = numerics.portable_env(v3 | {"avx512f"})
    assert full["NPY_DISABLE_CPU_FEATURES"] and full["ATEN_CPU_CAPABILITY"] == "avx2"
    assert numerics.portable_env({"sse4_2", "avx"}) == {}  # below x86-64-v3: nothing to hold


def test_a_late_request_keeps_the_mode_in_force(capsys):
    """torch is loaded in this process (portable, from conftest): native cannot take effect."""
    assert numerics.active() == "portable"
    assert numerics.apply("native") == "portable"
    assert "keeps numerics=portable" in capsys.readouterr().err
    assert os.environ[numerics.MODE_ENV] == "portable"


def test_threads_under_each_mode():
    assert numerics.cpu_threads("portable", None, 8) == 1
    assert numerics.cpu_threads("native", None, 8) == 8
    assert numerics.cpu_threads("portable", 4, 8) == 4


def test_environment_changes_are_named():
    old = {"torch": "2.12.0", "threads": 1, "packages": {"numpy": "2.4.6", "h5py": "3.9"}}
    new = {"torch": "2.13.0", "threads": 1, "packages": {"numpy": "2.4.7"}}
    assert changes(old, new) == [
        "torch 2.12.0 -> 2.13.0",
        "h5py 3.9 -> absent",
        "numpy 2.4.6 -> 2.4.7",
    ]


def test_resume_under_another_torch_warns_and_is_recorded(cli, tiny_data_dir, tmp_path):
    """The environment block is in the stored config; a resumed run whose torch differs from
    the stored one prints one warning line naming it, and `alpose status` shows both."""
    import torch
    from helpers.tiny import tiny_overrides

    args = ["run", "experiment=smoke", "acquirers=[random]", "seeds=[0]", "cycles=1"]
    args += ["epochs_first=1", "epochs_later=1", "jobs=1", *tiny_overrides(tiny_data_dir, tmp_path)]
    threads = torch.get_num_threads()
    try:
        status, out, _ = cli(*args)
        assert status == 0
        path = tmp_path / "smoke" / "config.yaml"
        stored = OmegaConf.load(path)
        env = stored.environment
        assert env.numerics == "portable" and env.torch == str(torch.__version__)
        assert env.threads == 1 and env.device == "cpu" and env.packages.numpy
        assert "warning" not in out
        stored.environment.torch = "2.0.0"
        OmegaConf.save(stored, path)
        status, out, _ = cli(*args)
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and f"torch 2.0.0 -> {torch.__version__}" in warnings[0]
    assert OmegaConf.load(path).environment_history[0].torch == "2.0.0"
    status, out, _ = cli("status", tmp_path / "smoke")
    assert "environment: Python" in out and "numerics portable (AVX2 kernels, 1 thread)" in out
    assert f"resumed in another environment (1): torch 2.0.0 -> {torch.__version__}" in out


def test_lock_file_pins_every_dependency_within_its_range():
    """requirements.lock (what `make install` installs) names an exact version of every
    dependency pyproject.toml declares, inside the declared range."""
    import tomllib
    from packaging.requirements import Requirement

    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            lock[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    for spec in declared:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{req.name} is not in requirements.lock (run `make lock`)"
        assert req.specifier.contains(lock[name], prereleases=True), (req, lock[name])


def test_bench_numerics_times_both_modes(cli, tmp_path):
    """`alpose bench numerics` times each mode in its own process: the portable one runs AVX2
    kernels (and the native one this CPU's best), and both rates are positive."""
    out_json = tmp_path / "numerics.json"
    args = ["bench", "numerics", "--models", "hourglass_small", "--quick", "--rounds", "1"]
    status, out, _ = cli(*args, "--threads", "1", "--json", out_json)
    assert status == 0, out
    import json

    rows = json.loads(out_json.read_text())["rows"]
    assert {r["what"] for r in rows} == {"train", "inference"}
    for row in rows:
        assert row["portable_kernels"] == "AVX2"
        assert row["native_kernels"] == ("AVX512" if HAS_AVX512 else row["native_kernels"])
        assert row["native_images_per_s"] > 0 and row["portable_images_per_s"] > 0
    assert "portable/native" in out
