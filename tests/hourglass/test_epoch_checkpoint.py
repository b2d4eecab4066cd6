"""Per-epoch checkpoints: a fit killed after epoch e and resumed ends with the uninterrupted weights."""

import pytest
import torch
from helpers.training import small_config

from hourglass.augment import AugmentConfig
from hourglass.model import StackedHourglass
from hourglass.train import AuxiliaryHead, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(RuntimeError):
    """Stands in for a kill between two epochs."""


def config(**kw) -> TrainConfig:
    base = dict(
        epochs=3,
        batch_size=8,
        select_by="loss",
        eval_batch_size=64,
        seed=3,
        plateau_patience=0,  # the schedule's state matters after a resume
        plateau_cooldown=0,
        augment=AugmentConfig(flip=0.5, rotate=20.0),
    )
    return small_config(**{**base, **kw})


class LossHead(torch.nn.Module):
    """A tiny Learning-Loss-like head on the pooled embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 1)

    def forward(self, out):
        return self.linear(out.embedding.float()).squeeze(-1)


def head() -> AuxiliaryHead:
    torch.manual_seed(9)
    return AuxiliaryHead("h", LossHead(), lambda p, loss: ((p - loss) ** 2).mean())


def run(data, cfg, checkpoint=None, kill_after=None, with_head=False):
    torch.manual_seed(1)
    model = StackedHourglass(1, 8, 2, 16)
    heads = [head()] if with_head else []

    def on_epoch(log):
        if log.epoch == kill_after:
            raise Killed

    result = fit(
        model,
        data,
        data.indices("train")[:32],
        data.indices("val")[:16],
        cfg,
        aux_heads=heads,
        progress=False,
        on_epoch=on_epoch,
        checkpoint=checkpoint,
    )
    return model, result, heads


def test_killed_fit_resumes_to_the_uninterrupted_weights(tiny_cache, tmp_path):
    cfg = config()
    ref_model, ref, ref_heads = run(tiny_cache, cfg, with_head=True)
    path = tmp_path / "cycle_1.epoch.pt"
    with pytest.raises(Killed):
        run(tiny_cache, cfg, checkpoint=path, kill_after=2, with_head=True)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2
    model, result, heads = run(tiny_cache, cfg, checkpoint=path, with_head=True)
    assert result.best_epoch == ref.best_epoch
    assert [h.select_loss for h in result.history] == [h.select_loss for h in ref.history]
    assert [h.lr for h in result.history] == [h.lr for h in ref.history]
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    for k, v in ref.best_state.items():
        torch.testing.assert_close(result.best_state[k], v, rtol=0, atol=0)
    for k, v in ref_heads[0].module.state_dict().items():
        torch.testing.assert_close(heads[0].module.state_dict()[k], v, rtol=0, atol=0)


def test_shorter_fit_then_longer_resume_matches_and_foreign_checkpoints_are_ignored(
    tiny_cache, tmp_path
):
    path = tmp_path / "e.pt"
    ref_model, ref, _ = run(tiny_cache, config(epochs=3))
    run(tiny_cache, config(epochs=1), checkpoint=path)  # "killed" after epoch 1
    model, result, _ = run(tiny_cache, config(epochs=3), checkpoint=path)
    assert len(result.history) == 3 and result.best_epoch == ref.best_epoch
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    # A checkpoint of another fit (other seed) is not resumed: training starts from epoch 1.
    other, res_other, _ = run(tiny_cache, config(epochs=1, seed=4), checkpoint=path)
    assert [h.epoch for h in res_other.history] == [1]
    assert torch.load(path, weights_only=True)["epoch"] == 1
    fresh, _, _ = run(tiny_cache, config(epochs=1, seed=4))
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v, rtol=0, atol=0)


def test_an_unreadable_epoch_checkpoint_is_ignored_with_a_warning(tiny_cache, tmp_path, capsys):
    path = tmp_path / "e.pt"
    path.write_bytes(b"not a checkpoint")
    model, result, _ = run(tiny_cache, config(epochs=1), checkpoint=path)
    assert [h.epoch for h in result.history] == [1]  # started from the first epoch
    assert "unreadable" in capsys.readouterr().err
    fresh, _, _ = run(tiny_cache, config(epochs=1))
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


def test_only_the_jobs_own_cuda_generator_is_saved_and_old_lists_still_load(monkeypatch):
    from hourglass import train

    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: calls.append(("get", d)) or "s")
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: pytest.fail("every GPU set"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append(("set", s, d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    gpu1 = torch.device("cuda", 1)
    assert train._cuda_rng(gpu1) == "s" and calls == [("get", gpu1)]
    assert train._cuda_rng(torch.device("cpu")) is None
    calls.clear()
    train._restore_cuda_rng("new", gpu1)  # this format: one state
    train._restore_cuda_rng(["a", "b", "c"], gpu1)  # older: one per GPU of the saving machine
    train._restore_cuda_rng(["a", "b"], torch.device("cuda"))  # no index: the current device
    train._restore_cuda_rng(["a"], gpu1)  # saved on a machine with fewer GPUs: skipped
    train._restore_cuda_rng([], gpu1)
    train._restore_cuda_rng(None, gpu1)
    train._restore_cuda_rng(["a"], torch.device("cpu"))
    assert calls == [
        ("set", "new", gpu1),
        ("set", "b", gpu1),
        ("set", "b", torch.device("cuda")),
    ]
