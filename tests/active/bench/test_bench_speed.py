"""``alpose bench`` (speed): the JSON has every field, ratios come from the measured numbers, the
experiment estimate counts the work of its budgets, epochs, seeds and acquirers (no timing asserts)."""

import json

import pytest

from active.bench.speed import SpeedRow, compose, link_baselines
from active.bench.speed_report import estimate
from active.loop.workload import work_of

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_writes_rows_with_ratios_of_the_measured_numbers(cli, tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, _ = cli(
        "bench",
        "--quick",
        "--models",
        "hourglass_small",
        "--acquirers",
        "random,multipeak",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--data-cache",
        str(tmp_path / "bench-cache"),
        "--data-rows",
        "40",
        "--json",
        str(out),
    )
    assert code == 0
    payload = json.loads(out.read_text())
    rows = {(r["what"], r["path"]): r for r in payload["rows"]}
    assert set(rows) == {
        ("data path", "sample"),
        ("data path", "batch"),
        ("train", "sample"),
        ("train", "batch"),
        ("inference", "-"),
        ("acquire random", "-"),
        ("acquire multipeak", "-"),
        ("cache read", "lazy"),
        ("cache read", "memory"),
        ("cache read", "fancy"),
        ("host step", "lazy"),
        ("host step", "memory"),
    }
    for r in payload["rows"]:
        assert r["images"] > 0 and r["seconds"] > 0
        assert r["images_per_s"] == pytest.approx(r["images"] / r["seconds"], rel=1e-2)
    for what in ("data path", "train"):
        batch, sample = rows[(what, "batch")], rows[(what, "sample")]
        assert batch["baseline_images_per_s"] == sample["images_per_s"]
        assert batch["ratio"] == pytest.approx(
            batch["images_per_s"] / sample["images_per_s"], abs=0.01
        )
        assert sample["ratio"] is None
    assert rows[("data path", "sample")]["threads"] == 1
    # the portable-against-native rows: one per (what, model), each mode timed in its own process
    numeric = {(r["what"], r["model"]): r for r in payload["numerics"]}
    assert set(numeric) == {("train", "hourglass_small"), ("inference", "hourglass_small")}
    assert all(r["portable_kernels"] == "AVX2" and r["ratio"] > 0 for r in numeric.values())
    assert "train" in stdout and "ratio" in stdout and "multipeak" in stdout


def row(what, device, path, ips, model="hourglass_small"):
    return SpeedRow(what, model, 64, device, 1, path, 10, 10 / ips, ips)


def test_gpu_rows_are_compared_with_the_cpu_per_sample_path():
    rows = [
        row("train", "cpu", "sample", 100.0),
        row("train", "cpu", "batch", 150.0),
        row("train", "cuda", "batch", 3000.0),
        row("inference", "cpu", "-", 400.0),
        row("inference", "cuda", "-", 8000.0),
        row("acquire coreset", "cuda", "-", 50.0),
    ]
    link_baselines(rows)
    assert [r.ratio for r in rows] == [None, 1.5, 30.0, None, 20.0, None]
    assert rows[2].baseline == "train cpu sample" and rows[4].baseline == "inference cpu"


def test_experiment_estimate_counts_budgets_epochs_seeds_and_acquirers():
    cfg = compose("run", ["experiment=quickstart", "seeds=[0,1]", "acquirers=[random,coreset]"])
    sizes = {"train": 8000, "val": 500, "test": 2000}
    work = work_of(cfg, sizes)
    budgets = [200, 400, 600, 800, 1000, 1200]
    assert work["budgets"] == budgets
    frac = float(cfg.protocol.holdout_fraction)  # standard protocol: a held-out slice selects
    first = budgets[0] * (1 - frac) * 30
    later = sum(b * (1 - frac) * 8 for b in budgets[1:])
    assert work["train_images"] == pytest.approx(2 * first + 2 * 2 * later)
    assert work["scored_images_per_acquirer"] == 2 * sum(8000 - b for b in budgets[:-1])
    rows = [
        row("train", "cpu", "sample", 500.0),
        row("inference", "cpu", "-", 2000.0),
        row("acquire random", "cpu", "-", 1e6),
        row("acquire coreset", "cpu", "-", 1000.0),
    ]
    est = estimate(cfg, rows, "cpu", sizes, "config")
    expect = (
        work["train_images"] / 500
        + work["inference_images"] / 2000
        + work["scored_images_per_acquirer"] * (1 / 1e6 + 1 / 1000)
    )
    assert est["total_hours"] == pytest.approx(expect / 3600, abs=0.01)
    assert set(est["seconds"]) == {"train", "inference", "acquire random", "acquire coreset"}


def test_mpii_paper_estimate_uses_the_paper_model_and_assumed_splits_without_a_cache(tmp_path):
    from active.loop.workload import split_sizes

    cfg = compose("run", ["experiment=mpii_paper", f"paths.data={tmp_path}"])
    sizes, source = split_sizes(cfg)
    assert source.startswith("assumed") and sizes["val"] == 2958
    work = work_of(cfg, sizes)
    # paper protocol: every epoch evaluates the whole val split; 5 seeds, 5 acquirers
    assert work["train_images"] == pytest.approx(
        5 * 1000 * 150 + 5 * 5 * 100 * sum(range(2000, 6001, 1000))
    )
    assert str(cfg.model.name) == "hourglass_paper"


def test_an_acquirers_own_pool_subsample_is_what_it_scores_in_the_estimate():
    cfg = compose("run", ["experiment=quickstart", "seeds=[0,1]", "acquirers=[random,egl_pp]"])
    work = work_of(cfg, {"train": 8000, "val": 500, "test": 2000})
    before = [200, 400, 600, 800, 1000]  # labelled when each selection is made
    assert work["scored_images"]["random"] == 2 * sum(8000 - b for b in before)
    assert work["scored_images"]["egl_pp"] == 2 * 5 * 1000  # quickstart's acquirer_settings
