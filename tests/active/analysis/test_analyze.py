"""The LearningLoss++ analysis: closed forms vs numerical integration, the poster's Table 1, the CLI."""

import json
import math

import numpy as np
import pytest
from helpers.tiny import tiny_overrides
from scipy import integrate, stats

from active.analysis import loss_gamma
from hourglass.errors import AlposeError

# Both branches of e^d E_n(d) (d = δ/Θ below and above 1), k = 1 … 30.
CASES = [(1, 0.2), (2, 0.1), (4, 1 / 15), (7, 0.03), (30, 0.1)]
DELTAS = [0.01, 0.1, 0.5]


def numeric_p_close(delta, k, theta):
    """P(|X − Y| ≤ δ) as the poster writes it: ∫ γ(x) P(|Y − x| ≤ δ) dx, by quadrature."""
    g = stats.gamma(k, scale=theta)
    inner = lambda x: g.pdf(x) * (g.cdf(x + delta) - g.cdf(max(x - delta, 0.0)))  # noqa: E731
    return integrate.quad(inner, 0, np.inf, limit=200)[0]


def numeric_coefficient(delta, k, theta):
    """E[x/(x + y) | y − x = δ] with density ∝ γ(x) γ(x + δ), by quadrature."""
    g = stats.gamma(k, scale=theta)
    w = lambda x: g.pdf(x) * g.pdf(x + delta)  # noqa: E731
    num = integrate.quad(lambda x: w(x) * x / (2 * x + delta), 0, np.inf, limit=200)[0]
    return num / integrate.quad(w, 0, np.inf, limit=200)[0]


@pytest.mark.parametrize("k,theta", CASES)
def test_p_close_matches_numerical_integration(k, theta):
    got = loss_gamma.p_close(DELTAS, k, theta)
    want = [numeric_p_close(d, k, theta) for d in DELTAS]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    assert loss_gamma.p_close(0.0, k, theta) == 0.0


def test_p_close_of_exponential_losses_is_one_minus_exp():
    d = np.array([0.02, 0.3, 2.0])
    np.testing.assert_allclose(loss_gamma.p_close(d, 1, 0.5), 1 - np.exp(-d / 0.5), atol=1e-14)


@pytest.mark.parametrize("k,theta", CASES)
def test_ll_pp_coefficient_matches_numerical_integration(k, theta):
    got = loss_gamma.ll_pp_coefficient(DELTAS, k, theta)
    want = [numeric_coefficient(d, k, theta) for d in DELTAS]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    grid = loss_gamma.ll_pp_coefficient(loss_gamma.COEFFICIENT_DELTAS, k, theta)
    assert grid[0] == 0.5 and np.all(np.diff(grid) < 0) and np.all(grid > 0)


def test_table1_fit_recovers_integer_k_and_theta_that_reproduce_it():
    fit = loss_gamma.fit_gamma_table(loss_gamma.POSTER_TABLE1)
    assert fit.k == 4 and fit.theta == pytest.approx(0.06664, abs=5e-5)
    table = np.array(loss_gamma.POSTER_TABLE1)
    got = np.round(loss_gamma.p_close(table[:, 0], fit.k, fit.theta), 3)
    np.testing.assert_array_equal(got, table[:, 1])
    for other in (3, 5):  # the neighbouring shapes, with their best Θ, cannot reproduce it
        worse = loss_gamma.fit_gamma_table(loss_gamma.POSTER_TABLE1, ks=[other])
        assert worse.k == other and worse.score > 5 * fit.score
        assert not np.array_equal(
            np.round(loss_gamma.p_close(table[:, 0], other, worse.theta), 3), table[:, 1]
        )


def test_mle_recovers_a_known_gamma_and_beats_neighbouring_shapes():
    x = np.random.default_rng(0).gamma(5, 0.1, size=20_000)
    fit = loss_gamma.fit_gamma_mle(x)
    assert fit.k == 5 and fit.theta == pytest.approx(0.1, rel=0.03)
    assert fit.theta * fit.k == pytest.approx(x.mean())
    ll = lambda k: stats.gamma.logpdf(x, k, scale=x.mean() / k).sum()  # noqa: E731
    assert ll(fit.k) > ll(fit.k - 1) and ll(fit.k) > ll(fit.k + 1)
    assert fit.score == pytest.approx(ll(fit.k) / len(x))


@pytest.mark.parametrize(
    "samples,message",
    [([1.0, 0.0, 2.0], "positive"), ([0.5], "at least 2"), ([2.0, 2.0, 2.0], "equal")],
)
def test_mle_refuses_samples_it_cannot_fit(samples, message):
    with pytest.raises(AlposeError, match=message):
        loss_gamma.fit_gamma_mle(samples)


@pytest.mark.parametrize("k,theta", [(2.5, 1), (0, 1), ("x", 1), (3, 0), (3, "nan")])
def test_bad_k_or_theta_is_refused(k, theta):
    with pytest.raises(AlposeError, match="k must be|theta"):
        loss_gamma.check_gamma(k, theta)


def error_line(status, err):
    assert status == 2 and "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_with_k_and_theta_writes_the_closed_forms(cli, tmp_path):
    out = tmp_path / "sub" / "ll.json"
    status, stdout, _ = cli(
        "analyze", "learning-loss", "--k", "4", "--theta", "0.0666", "--json", out
    )
    assert status == 0
    payload = json.loads(out.read_text())
    assert {"p_close", "ll_pp_coefficient"} <= set(payload)
    p = np.array(payload["p_close"])
    c = np.array(payload["ll_pp_coefficient"])
    assert list(p[:, 0]) == list(loss_gamma.P_CLOSE_DELTAS)
    assert c[0, 0] == 0.0 and c[-1, 0] == 0.5
    np.testing.assert_allclose(p[:, 1], loss_gamma.p_close(p[:, 0], 4, 0.0666), rtol=1e-15)
    np.testing.assert_allclose(c[:, 1], loss_gamma.ll_pp_coefficient(c[:, 0], 4, 0.0666))
    assert "0.150    0.607" in stdout  # the poster's last Table 1 entry
    assert f"0.500    {c[-1, 1]:.4f}" in stdout
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--k", "2.5", "--theta", "0.1"], "k must be a whole number"),
        (["--k", "3"], "--k and --theta together"),
        ([], "give RUN_DIR"),
        (["/nonexistent/run"], "run folder not found"),
    ],
)
def test_cli_errors_are_one_line(cli, args, message):
    status, _, err = cli("analyze", "learning-loss", *args)
    assert message in error_line(status, err)


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory):
    """A finished smoke run on the tiny cache: one acquirer, one seed, cycles 0 and 1.

    The anchor's MSE loss (peak 30) gives per-image losses that vary even for a barely trained
    net, so a Gamma fits after one epoch.
    """
    from active.cli.main import main

    runs = tmp_path_factory.mktemp("runs")
    extra = ["acquirers=[random]", "seeds=[0]", "cycles=1", "epochs_first=1"]
    extra += ["train.loss=mse", "train.peak=30"]
    assert main(["run", "experiment=smoke", *tiny_overrides(tiny_data_dir, runs), *extra]) == 0
    return runs / "smoke"


def test_cli_on_a_finished_run_fits_k_and_theta_and_prints_both_tables(cli, tiny_run, tmp_path):
    out = tmp_path / "fit.json"
    status, stdout, err = cli("analyze", "learning-loss", tiny_run, "--json", out)
    assert status == 0, err
    payload = json.loads(out.read_text())
    k, theta = payload["k"], payload["theta"]
    assert payload["method"] == "mle" and isinstance(k, int) and k >= 1 and theta > 0
    assert payload["n_losses"] == 100  # the tiny set's held-out test split
    assert f"fitted k={k}, Θ={theta:.6g}" in stdout and "random seed 0 cycle 1" in stdout
    assert "P(|X − Y| ≤ δ)" in stdout and "E[p_i | δ]" in stdout
    observed = float(stdout.split("observed mean ")[1].split(",")[0])
    assert k * theta == pytest.approx(observed, rel=1e-5)  # Θ = mean / k
    np.testing.assert_allclose(
        np.array(payload["p_close"])[:, 1], loss_gamma.p_close(loss_gamma.P_CLOSE_DELTAS, k, theta)
    )
    status, stdout, _ = cli("analyze", "learning-loss", tiny_run, "--cycle", "0")
    assert status == 0 and "random seed 0 cycle 0" in stdout
    assert not math.isclose(float(stdout.split("observed mean ")[1].split(",")[0]), observed)


def test_true_losses_average_to_trainings_selection_loss(tiny_run):
    import torch

    from active.analysis.run_models import load_run_model, true_losses
    from hourglass.factories import train_config
    from hourglass.train import selection_metrics

    run = load_run_model(tiny_run, cycle=1)
    tcfg = train_config(run.cfg)
    idx = run.data.indices("test")
    cpu = torch.device("cpu")
    losses = true_losses(run.model, run.data, idx, tcfg, cpu)
    assert losses.shape == (len(idx),) and losses.std() > 0
    assert losses.mean() == pytest.approx(selection_metrics(run.model, run.data, idx, tcfg, cpu)[0])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cycle", "7"], "checkpoint not found"),
        (["--acquirer", "coreset"], "no results of acquirer 'coreset'"),
        (["--seed", "3"], "no finished cycle"),
    ],
)
def test_cli_on_a_run_names_what_is_missing(cli, tiny_run, args, message):
    status, _, err = cli("analyze", "learning-loss", tiny_run, *args)
    assert message in error_line(status, err)


def test_cli_refuses_a_folder_that_is_not_a_run(cli, tmp_path):
    status, _, err = cli("analyze", "learning-loss", tmp_path)
    assert "no config.yaml" in error_line(status, err)
