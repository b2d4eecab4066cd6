"""The cycle loop: pairing, determinism, resume after SIGKILL, and refusals with one clear line."""

import json

import numpy as np
import pytest
from helpers.runs import alpose, kill_once_written, results, rows, smoke


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """One uninterrupted smoke experiment (2 acquirers x 2 seeds x 3 cycles)."""
    runs = tmp_path_factory.mktemp("reference")
    r = alpose(*smoke(runs, data_dir))
    assert r.returncode == 0, r.stderr
    return runs / "smoke"


def test_acquirers_of_a_seed_share_the_initial_set_and_first_model(reference):
    for seed in (0, 1):
        first = {
            acq: rows(reference / acq / f"seed_{seed}" / "metrics.csv")[0]
            for acq in ("random", "coreset")
        }
        assert first["random"] == first["coreset"]
        assert first["random"] == rows(reference / "_initial" / f"seed_{seed}" / "metrics.csv")[0]
        assert not (reference / "random" / f"seed_{seed}" / "checkpoints" / "cycle_0.pt").exists()
    from active.loop.experiment import initial_labelled

    pool = np.arange(160)
    assert np.array_equal(initial_labelled(pool, 24, 0), initial_labelled(pool, 24, 0))
    assert not np.array_equal(initial_labelled(pool, 24, 0), initial_labelled(pool, 24, 1))


def test_every_cycle_is_recorded_with_both_metrics_and_selections(reference):
    table = rows(reference / "coreset" / "seed_0" / "metrics.csv")
    assert [int(r["cycle"]) for r in table] == [0, 1, 2]
    assert [int(r["labelled"]) for r in table] == [24, 36, 48]
    assert all(0 <= float(r["pckh_standard"]) <= 100 and r["paper_head_top"] != "" for r in table)
    picks = np.load(reference / "coreset" / "seed_0" / "selections" / "cycle_1.npy")
    assert len(picks) == 12 and len(np.unique(picks["index"])) == 12
    assert np.all(np.diff(picks["score"]) <= 1e-9)  # core-set picks in decreasing distance


def test_same_seed_same_selections_and_numbers(reference, tmp_path, data_dir):
    r = alpose(*smoke(tmp_path, data_dir))
    assert r.returncode == 0, r.stderr
    assert results(tmp_path / "smoke") == results(reference)


def test_resume_after_sigkill_matches_an_uninterrupted_run(reference, tmp_path, data_dir):
    proc = alpose(*smoke(tmp_path, data_dir), wait=False)
    marker = tmp_path / "smoke" / "random" / "seed_0" / "checkpoints" / "cycle_1.pt"
    kill_once_written(proc, marker)
    done = (tmp_path / "smoke" / "coreset" / "seed_1" / "state.json").exists()
    assert not done
    r = alpose(*smoke(tmp_path, data_dir))
    assert r.returncode == 0, r.stderr
    assert results(tmp_path / "smoke") == results(reference)
    # The same command once more resumes nothing and changes nothing.
    r = alpose(*smoke(tmp_path, data_dir))
    assert r.returncode == 0 and results(tmp_path / "smoke") == results(reference)


def _one_error_line(r):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_budget_above_the_pool_is_refused_before_training(tmp_path, data_dir):
    line = _one_error_line(alpose(*smoke(tmp_path, data_dir, "initial=150", "per_cycle=20")))
    assert "larger than the unlabelled pool (160 persons)" in line
    assert not list(tmp_path.rglob("*.pt"))


def test_unknown_acquirer_lists_the_known_ones(tmp_path, data_dir):
    line = _one_error_line(alpose(*smoke(tmp_path, data_dir, "acquirers=[random,oracle]")))
    assert "unknown acquirer 'oracle'" in line and "random" in line and "coreset" in line


def test_changed_config_is_refused_naming_the_keys(reference, tmp_path, data_dir):
    r = alpose(*smoke(tmp_path, data_dir, "acquirers=[random]", "seeds=[0]"))
    assert r.returncode == 0, r.stderr
    line = _one_error_line(
        alpose(*smoke(tmp_path, data_dir, "acquirers=[random]", "seeds=[0]", "epochs_later=3"))
    )
    assert "epochs_later" in line and "fresh=true" in line
    r = alpose(
        *smoke(
            tmp_path, data_dir, "acquirers=[random]", "seeds=[0]", "epochs_later=3", "fresh=true"
        )
    )
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.glob("smoke.old-*"))


def test_an_acquirer_plugs_in_from_the_command_line(tmp_path, data_dir):
    target = "acquirer._target_=active.acquirers.random.RandomAcquirer"
    r = alpose(
        *smoke(tmp_path, data_dir, "acquirers=[]", "seeds=[0]", target, "acquirer.name=mine")
    )
    assert r.returncode == 0, r.stderr
    assert len(rows(tmp_path / "smoke" / "mine" / "seed_0" / "metrics.csv")) == 3
    line = _one_error_line(
        alpose(*smoke(tmp_path / "b", data_dir, "acquirers=[]", "acquirer._target_=no.such.Thing"))
    )
    assert "no.such.Thing" in line


def test_unknown_generator_knob_is_one_line_in_run_and_prepare(tmp_path, data_dir, cli):
    line = _one_error_line(
        alpose(*smoke(tmp_path, data_dir, "+dataset.generator.occluder_prop=0.5"))
    )
    assert "unknown synthetic generator knob(s) occluder_prop" in line and "occluder_prob" in line
    status, _, err = cli(
        "prepare", "synthetic", "--set", "occluder_prop=0.5", "--data-dir", tmp_path
    )
    assert status == 2 and "occluder_prop" in err and not list(tmp_path.glob("*.h5"))


def _offered(tmp_path, data_dir, name, *extra):
    """Run a one-seed smoke experiment with the recording acquirer; return what each cycle offered."""
    log = tmp_path / f"{name}.jsonl"
    target = "acquirer._target_=tests.helpers.recording_acquirer.UnlabelledRecorder"
    r = alpose(
        *smoke(tmp_path / name, data_dir, "acquirers=[]", "seeds=[0]", target),
        f"+acquirer.out={log}",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_pool_subsample_offers_a_seeded_fresh_subset_of_the_unlabelled_pool(tmp_path, data_dir):
    full = _offered(tmp_path, data_dir, "full")
    sub = _offered(tmp_path, data_dir, "sub", "pool_subsample=50")
    again = _offered(tmp_path, data_dir, "again", "pool_subsample=50")
    assert len(full) == len(sub) == 2  # one acquisition after each of cycles 0 and 1
    pool = set(full[0]["labelled"]) | set(full[0]["unlabelled"])
    assert len(pool) == 160  # smoke: the whole training split is the pool
    for f, s in zip(full, sub, strict=True):
        assert len(f["unlabelled"]) == 160 - len(f["labelled"])  # off: the whole rest of the pool
        assert len(s["unlabelled"]) == 50
        assert set(s["unlabelled"]) <= pool - set(s["labelled"])  # never a labelled row
    assert sub[0]["labelled"] == full[0]["labelled"]  # the initial set does not depend on it
    assert set(sub[0]["unlabelled"]) != set(sub[1]["unlabelled"])  # a fresh subset each cycle
    assert sub == again  # deterministic by seed
    # the acquirer's own pool_subsample (acquirer config key) offers the same seeded subset
    own = _offered(tmp_path, data_dir, "own", "+acquirer.pool_subsample=50")
    assert own == sub


def test_initial_family_draws_the_first_set_from_that_family_only():
    from active.loop.experiment import initial_candidates, initial_labelled
    from hourglass.datasets.cache import PoseCache
    from hourglass.errors import AlposeError

    n = 30
    family = np.array([0] * 10 + [1] * 20, np.int16)  # 10 "lsp" rows, then 20 "lspet" rows
    data = PoseCache(
        images=np.zeros((n, 4, 4, 3), np.uint8),
        joints=np.zeros((n, 14, 2), np.float32),
        visibility=np.ones((n, 14), np.int8),
        normaliser=np.ones(n, np.float32),
        split=np.zeros(n, np.uint8),
        dataset="lsp",
        joint_names=tuple(f"j{i}" for i in range(14)),
        family=family,
        family_names=("lsp", "lspet"),
    )
    pool = np.arange(n)
    lsp = initial_candidates(data, pool, "lsp")
    assert lsp.tolist() == list(range(10))
    assert initial_labelled(lsp, 10, seed=3).tolist() == list(range(10))  # exactly the LSP rows
    assert set(initial_labelled(lsp, 4, seed=3)) < set(range(10))
    assert initial_candidates(data, pool, None) is pool
    with pytest.raises(AlposeError, match="needs 11 persons but only 10 are eligible"):
        initial_labelled(lsp, 11, seed=0)
    with pytest.raises(AlposeError, match=r"no such family \(families: lsp, lspet\)"):
        initial_candidates(data, pool, "mpii")
