"""`alpose table` and `alpose status` on a hand-made result set in the exact layout of active/loop/run_files.py."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from active.analysis import stats
from active.loop.run_files import METRIC_COLUMNS, joint_columns, seed_dir

ACQUIRERS = ("coreset", "egl_pp", "random")  # sorted: the table's row order
SEEDS = (0, 1, 2, 3, 4)
BUDGETS = (1000, 2000, 3000, 4000)  # cycles 0..3; 2000-4000 match the paper's MPII budgets
EFFECT = {"random": 0.0, "coreset": 0.4, "egl_pp": 1.2}  # PCKh points gained per cycle
ALPHA = 0.1


def make_values(rng_seed: int = 20240) -> np.ndarray:
    """(A, S, B) PCKh in percent: a shared curve, a seed effect, a per-acquirer gain and noise.

    Cycle 0 is the shared initial model, so it is identical for every acquirer of a seed.
    """
    rng = np.random.default_rng(rng_seed)
    curve = 60 + 8 * np.log(np.array(BUDGETS) / BUDGETS[0])
    seed_effect = rng.normal(0, 1.5, size=len(SEEDS))
    values = np.empty((len(ACQUIRERS), len(SEEDS), len(BUDGETS)))
    for a, acq in enumerate(ACQUIRERS):
        gain = EFFECT[acq] * np.arange(len(BUDGETS))
        noise = rng.normal(0, 0.8, size=(len(SEEDS), len(BUDGETS)))
        noise[:, 0] = 0.0
        values[a] = curve + seed_effect[:, None] + gain + noise
    return np.round(values, 2)  # metrics.csv holds two decimals, like a real run


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """A metrics.csv with every column of active/loop/run_files.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [*METRIC_COLUMNS, *joint_columns()]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, 0) for c in columns})


def write_experiment(root: Path, values: np.ndarray, name: str = "exp") -> Path:
    """RUN_DIR/<acquirer>/seed_<s>/metrics.csv for every (acquirer, seed), plus an _initial folder."""
    for a, acq in enumerate(ACQUIRERS):
        for s, seed in enumerate(SEEDS):
            rows = [
                {
                    "cycle": c,
                    "labelled": b,
                    "pckh_standard": values[a, s, c],
                    "pckh_paper": values[a, s, c] + 3.0,
                    "epochs": 10,
                    "best_epoch": 7,
                }
                for c, b in enumerate(BUDGETS)
            ]
            write_metrics(seed_dir(root, name, acq, seed) / "metrics.csv", rows)
    for seed in SEEDS:  # the shared first cycle: must not appear as an acquirer
        write_metrics(
            seed_dir(root, name, "_initial", seed) / "metrics.csv",
            [{"cycle": 0, "labelled": BUDGETS[0], "pckh_standard": 1.0, "pckh_paper": 1.0}],
        )
    return root / name


@pytest.fixture
def values() -> np.ndarray:
    return make_values()


@pytest.fixture
def run_dir(tmp_path, values) -> Path:
    return write_experiment(tmp_path / "runs", values)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def p_of(rows: list[dict[str, str]], acquirer: str, budget: int) -> float:
    (row,) = [r for r in rows if r["acquirer"] == acquirer and int(r["labelled"]) == budget]
    return float(row["p_value"]) if row["p_value"] else math.nan


def assert_same_p(ours: float, scipy_p: float) -> None:
    if math.isnan(scipy_p):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(scipy_p, rel=1e-9, abs=1e-15)


# --------------------------------------------------------------------------------------------
# p-values, means, AUC
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "alternative"),
    [("random", "beats-reference"), ("egl_pp", "reference-better"), ("random", "reference-better")],
)
def test_p_values_equal_scipy_ttest_rel(cli, run_dir, values, reference, alternative):
    status, out, err = cli("table", run_dir, "--reference", reference, "--alternative", alternative)
    assert status == 0, err
    rows = read_csv(run_dir / "table.csv")
    r = ACQUIRERS.index(reference)
    tested = 0
    for a, acq in enumerate(ACQUIRERS):
        for b, budget in enumerate(BUDGETS):
            ref, other = values[r, :, b], values[a, :, b]
            x, y = (other, ref) if alternative == "beats-reference" else (ref, other)
            with np.errstate(invalid="ignore", divide="ignore"):
                expected = sps.ttest_rel(x, y, alternative="greater").pvalue
            if acq == reference:
                expected = math.nan
            assert_same_p(p_of(rows, acq, budget), float(expected))
            tested += np.isfinite(expected)
    assert tested == 2 * (len(BUDGETS) - 1)  # cycle 0 is identical for all acquirers: no test


def test_built_in_effect_is_detected(cli, run_dir):
    cli("table", run_dir)
    rows = read_csv(run_dir / "table.csv")
    assert p_of(rows, "egl_pp", BUDGETS[-1]) < ALPHA  # egl_pp gains 1.2 points a cycle
    assert math.isnan(p_of(rows, "egl_pp", BUDGETS[0]))  # the shared initial cycle


def test_mean_std_n_equal_numpy(cli, run_dir, values):
    assert cli("table", run_dir)[0] == 0
    rows = read_csv(run_dir / "table.csv")
    assert list(rows[0]) == ["acquirer", "labelled", "metric", "mean", "std", "n", "p_value"]
    assert len(rows) == len(ACQUIRERS) * len(BUDGETS)
    for row in rows:
        v = values[ACQUIRERS.index(row["acquirer"]), :, BUDGETS.index(int(row["labelled"]))]
        assert row["metric"] == "pckh_standard"
        assert float(row["mean"]) == pytest.approx(np.mean(v), rel=1e-12)
        assert float(row["std"]) == pytest.approx(np.std(v, ddof=1), rel=1e-9)
        assert int(row["n"]) == len(SEEDS)


def test_paper_metric_column(cli, run_dir, values):
    assert cli("table", run_dir, "--metric", "paper")[0] == 0
    rows = read_csv(run_dir / "table.csv")
    assert {r["metric"] for r in rows} == {"pckh_paper"}
    row = next(r for r in rows if r["acquirer"] == "random" and int(r["labelled"]) == 2000)
    assert float(row["mean"]) == pytest.approx(np.mean(values[2, :, 1]) + 3.0)


def test_auc_by_hand(cli, run_dir, values):
    assert cli("table", run_dir)[0] == 0
    rows = {r["acquirer"]: r for r in read_csv(run_dir / "auc.csv")}
    x = BUDGETS
    for a, acq in enumerate(ACQUIRERS):
        per_seed = []
        for s in range(len(SEEDS)):
            y = values[a, s]
            area = sum((y[i] + y[i + 1]) / 2 * (x[i + 1] - x[i]) for i in range(len(x) - 1))
            per_seed.append(area / (x[-1] - x[0]))
        assert float(rows[acq]["mean"]) == pytest.approx(np.mean(per_seed), rel=1e-12)
        assert float(rows[acq]["std"]) == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)
        assert (rows[acq]["first_budget"], rows[acq]["last_budget"]) == ("1000", "4000")
    expected = sps.ttest_rel(
        [float(v) for v in np.trapezoid(values[1], x, axis=1) / 3000],
        np.trapezoid(values[2], x, axis=1) / 3000,
        alternative="greater",
    ).pvalue
    assert float(rows["egl_pp"]["p_value"]) == pytest.approx(expected, rel=1e-9)
    assert rows["random"]["p_value"] == ""


def test_missing_seed_pairs_only_common_seeds(cli, run_dir, values):
    shutil.rmtree(run_dir / "coreset" / "seed_3")
    assert cli("table", run_dir)[0] == 0
    rows = read_csv(run_dir / "table.csv")
    keep = [0, 1, 2, 4]
    for b, budget in enumerate(BUDGETS[1:], 1):
        expected = sps.ttest_rel(
            values[0, keep, b], values[2, keep, b], alternative="greater"
        ).pvalue
        assert p_of(rows, "coreset", budget) == pytest.approx(expected, rel=1e-9)
        (row,) = [r for r in rows if r["acquirer"] == "coreset" and int(r["labelled"]) == budget]
        assert int(row["n"]) == 4
        assert float(row["mean"]) == pytest.approx(np.mean(values[0, keep, b]))
    md = (run_dir / "table.md").read_text()
    assert "[n=4]" in md


def test_fewer_than_two_pairs_gives_nan(run_dir):
    cube = stats.to_cube(stats.load_results(run_dir), "pckh_standard")
    cube.values[0, 1:, :] = np.nan  # coreset: one seed left
    tests = stats.paired_tests(cube, "random", "beats-reference")
    assert np.isnan(tests.p[0]).all() and (tests.n[0] == 1).all()


# --------------------------------------------------------------------------------------------
# Files and rendering
# --------------------------------------------------------------------------------------------


def test_files_exist_and_png_is_valid(cli, run_dir, tmp_path):
    out = tmp_path / "report"
    status, stdout, _ = cli("table", run_dir, "--out", out)
    assert status == 0
    for name in ("table.md", "table.tex", "table.csv", "auc.csv", "curves.png"):
        assert (out / name).is_file(), name
        assert not (run_dir / name).exists()  # --out moved them
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(out / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100
    assert stdout == (out / "table.md").read_text()
    tex = (out / "table.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "egl\\_pp" in tex


def _markdown_cells(md: str) -> dict[str, list[str]]:
    """Row label -> budget cells of the markdown table (AUC left out); "<acquirer> / paper" rows."""
    rows, previous = {}, ""
    main_table = md.split("\n\n")[1]  # title, main table, footnotes, then the time table
    for line in main_table.splitlines():
        if line.startswith("| ") and not line.startswith("| acquirer"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            label = f"{previous} / paper" if cells[0] == "↳ paper" else cells[0]
            rows[label], previous = cells[1 : 1 + len(BUDGETS)], label
    return rows


@pytest.mark.parametrize("alpha", ["0.1", "0.02"])
def test_markdown_bolds_exactly_the_significant_cells(cli, run_dir, alpha):
    status, out, _ = cli("table", run_dir, "--alpha", alpha)
    assert status == 0
    rows = read_csv(run_dir / "table.csv")
    cells = _markdown_cells(out)
    bold_count = 0
    for acq in ACQUIRERS:
        label = f"{acq} (reference)" if acq == "random" else acq
        for budget, cell in zip(BUDGETS, cells[label], strict=True):
            p = p_of(rows, acq, budget)
            assert cell.startswith("**") == (p < float(alpha)), (acq, budget, cell, p)
            bold_count += cell.startswith("**")
    assert 0 < bold_count < 2 * (len(BUDGETS) - 1)  # some but not all: the test can tell
    assert "α = " + alpha in out and "n = 5" in out and "–" in out


def test_paper_numbers_beside_ours_for_a_paper_experiment(cli, run_dir):
    (run_dir / "config.yaml").write_text("dataset:\n  name: mpii\nprotocol:\n  name: paper\n")
    status, out, _ = cli(
        "table",
        run_dir,
        "--metric",
        "paper",
        "--reference",
        "egl_pp",
        "--alternative",
        "reference-better",
    )
    assert status == 0
    cells = _markdown_cells(out)
    assert cells["random / paper"] == [
        "",
        "**75.95 ± 0.55 (0.003)**",
        "**78.33 ± 0.65 (0.012)**",
        "**80.31 ± 0.91 (0.006)**",
    ]
    assert cells["coreset / paper"][2] == "79.24 ± 0.70 (0.245)"  # p > 0.1 in the paper: not bold
    assert cells["egl_pp (reference) / paper"][1:] == [
        "77.28 ± 0.63",
        "79.58 ± 0.33",
        "81.53 ± 0.51",
    ]
    assert out.count("↳ paper") == 3
    assert "EGL++" in out
    assert r"77.28 $\pm$ 0.63" in (run_dir / "table.tex").read_text()


def test_no_paper_numbers_without_paper_protocol(cli, run_dir):
    (run_dir / "config.yaml").write_text("dataset:\n  name: mpii\nprotocol:\n  name: standard\n")
    status, out, _ = cli("table", run_dir)
    assert status == 0 and "paper" not in out.split("\n\n")[1]  # nothing in the table body


def test_power_caveat_is_the_real_power():
    n, alpha = 5, 0.1
    mde = stats.min_detectable_effect(n, alpha)
    assert stats.critical_effect(n, alpha) == pytest.approx(sps.t.ppf(0.9, 4) / math.sqrt(5))
    rng = np.random.default_rng(1)
    d = rng.normal(mde, 1.0, size=(40000, n))
    p = sps.ttest_1samp(d, 0.0, axis=1, alternative="greater").pvalue
    assert np.mean(p < alpha) == pytest.approx(0.8, abs=0.01)
    assert f"{mde:.2f} σ_d" in stats.power_caveat(n, alpha)


# --------------------------------------------------------------------------------------------
# Status and errors
# --------------------------------------------------------------------------------------------


def test_status_marks_a_missing_cycle(cli, run_dir):
    path = run_dir / "coreset" / "seed_2" / "metrics.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # drop cycle 3
    status, out, _ = cli("status", run_dir)
    assert status == 0
    line = next(ln for ln in out.splitlines() if ln.split()[:2] == ["coreset", "2"])
    assert "###." in line and "missing: 3" in line
    assert "done 59 of 60" in out
    assert "_initial" not in out


@pytest.mark.parametrize(
    "schedule",
    [
        "budgets: [1000, 2000, 3000, 4000, 5000]",
        "budgets: null\ninitial: 1000\nper_cycle: 1000\ncycles: 4",
    ],
)
def test_status_uses_the_config_schedule(cli, run_dir, schedule):
    (run_dir / "config.yaml").write_text(f"{schedule}\nseeds: [0, 1, 2, 3, 4, 5]\n")
    status, out, _ = cli("status", run_dir)
    assert status == 0
    assert "done 60 of 90" in out  # 3 acquirers x 6 seeds x 5 cycles
    assert "missing: 0,1,2,3,4" in out  # seed 5 never ran


def test_status_lists_stored_acquirers(cli, run_dir):
    (run_dir / "config.yaml").write_text("acquirer_configs:\n  random: {}\n  multipeak: {}\n")
    status, out, _ = cli("status", run_dir)
    assert status == 0
    assert "multipeak       0  ....  0/4  missing: 0,1,2,3" in out
    assert "done 60 of 80" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("table", "{root}/nope"), "alpose run"),
        (("table", "{root}/empty"), "alpose run"),
        (("table", "{run}", "--reference", "bald"), "coreset, egl_pp, random"),
        (("table", "{run}", "--alpha", "2"), "--alpha"),
        (("status", "{root}/nope"), "not found"),
    ],
)
def test_errors_are_one_line_exit_2(cli, run_dir, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    args = [a.format(root=tmp_path, run=run_dir) for a in args]
    status, out, err = cli(*args)
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert out == ""


def test_paper_names_map_our_acquirers_to_the_published_methods():
    from active.analysis.tables import load_paper_numbers

    paper = load_paper_numbers("lsp", ("multipeak_entropy", "eglpp", "learning_loss", "bald"))
    assert set(paper) == {"multipeak_entropy", "eglpp", "learning_loss"}
    assert (paper["multipeak_entropy"][2000].mean, paper["multipeak_entropy"][2000].p) == (
        80.36,
        0.225,
    )
    assert math.isnan(paper["eglpp"][6000].p) and paper["eglpp"][6000].mean == 84.68


def test_cycle_costs_average_cycles_after_the_shared_one(cli, tmp_path):
    from active.analysis.stats import cycle_costs

    root = tmp_path / "timed"
    for a, acq in enumerate(("coreset", "random")):
        for seed in (0, 1):
            rows = [
                {
                    "cycle": c,
                    "labelled": b,
                    "pckh_standard": 50.0 + seed,
                    "pckh_paper": 53.0,
                    "acquisition_seconds": 999.0 if c == 0 else 10.0 * (a + 1) + c,
                    "train_seconds": 999.0 if c == 0 else 100.0 + seed,
                }
                for c, b in enumerate(BUDGETS)
            ]
            write_metrics(seed_dir(root, "timed", acq, seed) / "metrics.csv", rows)
    cost = cycle_costs(root / "timed")
    later = np.arange(1, len(BUDGETS))
    assert cost.acquirers == ("coreset", "random")
    np.testing.assert_allclose(cost.acquire, [10 + later.mean(), 20 + later.mean()])
    np.testing.assert_allclose(cost.train, [100.5, 100.5])
    assert cost.cycles.tolist() == [2 * len(later)] * 2
    status, out, _ = cli("table", root / "timed")
    assert status == 0
    assert f"| coreset | {10 + later.mean():.1f} | 100.5 |" in out


def test_the_run_configs_table_settings_are_the_defaults_and_flags_override_them(cli, run_dir):
    """mpii_paper/lsp_paper store table.reference egl_pp, reference-better: the EGL++ tables."""
    (run_dir / "config.yaml").write_text(
        "table:\n  reference: egl_pp\n  alternative: reference-better\n"
    )
    flags = ("--reference", "egl_pp", "--alternative", "reference-better")
    status, by_config, _ = cli("table", run_dir)
    assert status == 0 and "egl_pp (reference)" in by_config
    assert cli("table", run_dir, *flags)[1] == by_config
    status, by_flag, _ = cli("table", run_dir, "--reference", "random")
    assert status == 0 and "random (reference)" in by_flag
    (run_dir / "config.yaml").write_text("table:\n  alternative: sideways\n")
    status, _, err = cli("table", run_dir)
    assert status == 2 and "table.alternative" in err
    for name in ("mpii_paper", "lsp_paper"):
        from omegaconf import OmegaConf

        from hourglass.config import config_dir

        cfg = OmegaConf.load(config_dir() / "experiment" / f"{name}.yaml")
        assert cfg.table.reference == "egl_pp" and cfg.table.alternative == "reference-better"
        assert "egl_pp" in cfg.acquirers
