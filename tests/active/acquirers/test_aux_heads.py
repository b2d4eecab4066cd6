"""Auxiliary heads in the cycle loop: every new acquirer end to end, the frozen cycle-0 head pass,
exact resume of the head after SIGKILL, and the LearningLoss++ head ranking true losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.runs import alpose, kill_once_written, results, rows, smoke
from scipy.stats import spearmanr

from active.acquirers.learning_loss import LearningLossAcquirer, true_and_predicted_losses
from active.loop.head_training import fit_head_frozen
from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig, fit

NEW = ["multipeak", "learning_loss", "learning_loss_pp", "aleatoric", "vl4pose"]
NEW += ["egl_ensemble", "bayes_variance"]
AUX = {"learning_loss": "learning_loss", "learning_loss_pp": "learning_loss"}
AUX |= {"aleatoric": "aleatoric", "vl4pose": "vl4pose"}
AUX |= {"egl_ensemble": "egl_ensemble", "bayes_variance": "bayes_variance"}
WARM = ["protocol.warm_start=true", "epochs_later=2", "seeds=[0]"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("aux-data")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """One uninterrupted smoke run of every new acquirer (seed 0, warm starts, 3 cycles)."""
    runs = tmp_path_factory.mktemp("aux-reference")
    r = alpose(*smoke(runs, data_dir, f"acquirers=[{','.join(NEW)}]", *WARM))
    assert r.returncode == 0, r.stderr
    return runs / "smoke"


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_every_new_acquirer_runs_end_to_end_and_keeps_its_head(reference):
    shared = rows(reference / "_initial" / "seed_0" / "metrics.csv")[0]
    for name in NEW:
        cell = reference / name / "seed_0"
        table = rows(cell / "metrics.csv")
        assert [int(r["labelled"]) for r in table] == [24, 36, 48]
        assert table[0] == shared  # cycle 0 is the shared model
        for cycle in (1, 2):
            picks = np.load(cell / "selections" / f"cycle_{cycle}.npy")
            assert len(np.unique(picks["index"])) == 12 and np.isfinite(picks["score"]).all()
        if name not in AUX:
            assert not (cell / "checkpoints" / "cycle_0.pt").exists()
            assert "aux" not in load(cell / "checkpoints" / "cycle_1.pt")
            continue
        head0 = load(cell / "checkpoints" / "cycle_0.pt")
        assert set(head0) == {"aux"} and set(head0["aux"]) == {AUX[name]}  # no pose weights
        head1 = load(cell / "checkpoints" / "cycle_1.pt")
        assert set(head1) == {"model", "aux"}
        assert any(
            not torch.equal(v, head1["aux"][AUX[name]][k])
            for k, v in head0["aux"][AUX[name]].items()
        )
    scores = np.load(reference / "vl4pose" / "seed_0" / "selections" / "cycle_1.npy")["score"]
    assert np.all(np.diff(scores) >= 0)  # lowest likelihood first
    scores = np.load(reference / "learning_loss_pp" / "seed_0" / "selections" / "cycle_1.npy")
    assert np.all(np.diff(scores["score"]) <= 0)  # highest predicted loss first
    for name in ("egl_ensemble", "bayes_variance"):  # highest expected gradient length / variance
        scores = np.load(reference / name / "seed_0" / "selections" / "cycle_1.npy")["score"]
        assert np.all(np.diff(scores) <= 0) and (scores > 0).all()


def test_resume_after_sigkill_restores_the_head_exactly(reference, tmp_path, data_dir):
    args = smoke(tmp_path, data_dir, "acquirers=[learning_loss_pp,vl4pose]", *WARM)
    proc = alpose(*args, wait=False)
    marker = tmp_path / "smoke" / "learning_loss_pp" / "seed_0" / "checkpoints" / "cycle_1.pt"
    kill_once_written(proc, marker)
    assert not (tmp_path / "smoke" / "vl4pose" / "seed_0" / "state.json").exists()
    r = alpose(*args)
    assert r.returncode == 0, r.stderr
    got, want = results(tmp_path / "smoke"), results(reference)
    for key in got:
        assert got[key] == want[key], key
    for name in ("learning_loss_pp", "vl4pose"):
        for cycle in (0, 1, 2):
            path = f"{name}/seed_0/checkpoints/cycle_{cycle}.pt"
            a, b = load(tmp_path / "smoke" / path)["aux"], load(reference / path)["aux"]
            for head, state in a.items():
                assert all(torch.equal(v, b[head][k]) for k, v in state.items()), path


def small_config(**kw) -> TrainConfig:
    base = dict(batch_size=32, lr=2e-3, loss="ce", sigma=1.0, peak=1.0, device="cpu", amp=False)
    return TrainConfig(**{**base, **kw})


def test_cycle0_head_pass_trains_the_head_and_leaves_the_pose_net_untouched(tiny_cache):
    torch.manual_seed(0)
    model = StackedHourglass(1, 16, 2, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BN statistics included
    head = LearningLossAcquirer().auxiliary_head(model, tiny_cache, "standard")
    start = {k: v.clone() for k, v in head.module.state_dict().items()}
    idx = tiny_cache.indices("train")[:64]
    state = fit_head_frozen(model, head, tiny_cache, idx, small_config(seed=1), epochs=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, state[k]) for k, v in start.items())


def test_learning_loss_pp_head_ranks_held_out_losses(tiny_cache):
    """After brief training on the synthetic set, predicted and true per-sample losses on held-out
    images have a positive Spearman correlation (0.30 at this seed when written)."""
    torch.manual_seed(0)
    model = StackedHourglass(1, 16, 2, 16)
    torch.manual_seed(100)
    head = LearningLossAcquirer(objective="kl").auxiliary_head(model, tiny_cache, "standard")
    cfg = small_config(epochs=6, seed=0, select_by="loss")
    train = tiny_cache.indices("train")[:400]
    fit(
        model,
        tiny_cache,
        train,
        tiny_cache.indices("val")[:32],
        cfg,
        aux_heads=[head],
        progress=False,
    )
    held = np.concatenate([tiny_cache.indices("val"), tiny_cache.indices("test")])
    true, predicted = true_and_predicted_losses(
        model, tiny_cache, held, cfg, {"ll++": head.module}, torch.device("cpu")
    )
    rho = spearmanr(true, predicted["ll++"]).statistic
    assert rho > 0.15, rho
