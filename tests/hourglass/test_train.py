"""Training: it learns, it is deterministic, NaN is caught, auxiliary heads never touch the pose net."""

import numpy as np
import pytest
import torch
from helpers.training import small_config
from torch import nn

from hourglass.augment import AugmentConfig
from hourglass.evaluate import headline, predict_coords, score
from hourglass.model import StackedHourglass
from hourglass.train import AuxiliaryHead, NonFiniteLossError, fit


def val_pckh(model, data, cfg) -> float:
    idx = data.indices("val")
    return headline(score(data, idx, predict_coords(model, data, idx, loss=cfg.loss))["standard"])


@pytest.mark.slow
def test_short_training_raises_validation_pckh_far_above_untrained(tiny_cache):
    # ~280 steps on 600 crops (about 15 s on 2 cores); measured: ~1% untrained -> ~20% trained.
    cfg = small_config(epochs=15, lr=3e-3, augment=AugmentConfig(enabled=False))
    torch.manual_seed(0)
    model = StackedHourglass(1, 32, 3, 16)
    before = val_pckh(model, tiny_cache, cfg)
    result = fit(
        model,
        tiny_cache,
        tiny_cache.indices("train"),
        tiny_cache.indices("val"),
        cfg,
        progress=False,
    )
    after = val_pckh(model, tiny_cache, cfg)
    assert before < 5.0
    assert after > max(12.0, 4 * before), (before, after)
    assert result.history[result.best_epoch - 1].select_pckh == pytest.approx(after)


def test_fit_is_deterministic_by_seed_on_cpu(tiny_cache):
    idx = tiny_cache.indices("train")[:64]
    states = []
    for _ in range(2):
        torch.manual_seed(5)
        model = StackedHourglass(1, 16, 2, 16)
        fit(model, tiny_cache, idx, idx[:16], small_config(seed=5), progress=False)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


class _NaNAfter(nn.Module):
    """Wraps a model and poisons its heatmaps from the n-th training forward pass on."""

    def __init__(self, model, n):
        super().__init__()
        self.model, self.n, self.calls = model, n, 0

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                out.heatmaps = out.heatmaps * float("nan")
        return out


def test_nan_loss_names_the_epoch_and_keeps_the_last_good_weights(tiny_cache, tmp_path):
    idx = tiny_cache.indices("train")[:64]  # 2 batches per epoch -> forward 6 is epoch 3, step 1
    torch.manual_seed(0)
    model = _NaNAfter(StackedHourglass(1, 16, 2, 16), n=6)
    cfg = small_config(epochs=5, select_by="loss")
    path = tmp_path / "e.pt"
    with pytest.raises(NonFiniteLossError, match="epoch 3") as err:
        fit(model, tiny_cache, idx, idx[:16], cfg, progress=False, checkpoint=path)
    assert err.value.kept_epoch in (1, 2) and err.value.step == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 2  # nothing of the NaN epoch is saved
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["best_state"][k]), k


class _NaNEval(nn.Module):
    """Wraps a model and poisons its evaluation heatmaps from the n-th evaluation pass on."""

    def __init__(self, model, n):
        super().__init__()
        self.model, self.n, self.calls = model, n, 0

    def forward(self, x):
        out = self.model(x)
        if not self.training:
            self.calls += 1
            if self.calls >= self.n:
                out.heatmaps = out.heatmaps * float("nan")
        return out


def test_a_nan_selection_loss_restores_the_auxiliary_heads_too(tiny_cache, tmp_path):
    idx = tiny_cache.indices("train")[:64]
    torch.manual_seed(0)
    model = _NaNEval(StackedHourglass(1, 16, 2, 16), n=2)  # one evaluation batch per epoch
    head = AuxiliaryHead("ll", _LossHead(16), lambda pred, loss: ((pred - loss) ** 2).mean())
    path = tmp_path / "e.pt"
    with pytest.raises(NonFiniteLossError, match="epoch 2") as err:
        fit(
            model,
            tiny_cache,
            idx,
            idx[:16],
            small_config(epochs=3, select_by="loss"),
            aux_heads=[head],
            progress=False,
            checkpoint=path,
        )
    assert err.value.kept_epoch == 1
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 1
    for k, v in head.module.state_dict().items():
        assert torch.equal(v, saved["best_aux"]["ll"][k]), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["best_state"][k]), k


class _LossHead(nn.Module):
    """A tiny Learning-Loss-like head on the pooled embedding."""

    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Linear(channels, 1)

    def forward(self, out):
        return self.fc(out.embedding).squeeze(-1)


def test_auxiliary_head_trains_but_never_changes_the_pose_net(tiny_cache):
    idx = tiny_cache.indices("train")[:64]
    cfg = small_config(seed=1)
    torch.manual_seed(1)
    plain = StackedHourglass(1, 16, 2, 16)
    fit(plain, tiny_cache, idx, idx[:16], cfg, progress=False)
    torch.manual_seed(1)
    with_head = StackedHourglass(1, 16, 2, 16)
    head = _LossHead(16)
    before = head.fc.weight.detach().clone()
    aux = AuxiliaryHead("ll", head, lambda pred, loss: ((pred - loss) ** 2).mean(), weight=100.0)
    result = fit(with_head, tiny_cache, idx, idx[:16], cfg, aux_heads=[aux], progress=False)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, with_head.state_dict()[key]), key
    assert not torch.equal(before, head.fc.weight)
    assert torch.equal(result.aux_states["ll"]["fc.weight"], head.fc.weight.detach())


def test_warm_start_loads_the_given_weights(tiny_cache):
    idx = tiny_cache.indices("train")[:32]
    torch.manual_seed(2)
    source = StackedHourglass(1, 16, 2, 16)
    target = StackedHourglass(1, 16, 2, 16)
    fit(
        target,
        tiny_cache,
        idx,
        idx,
        small_config(lr=0.0),
        init_state=source.state_dict(),
        progress=False,
    )
    for key, value in source.state_dict().items():
        if "running" not in key and "num_batches" not in key:  # BN statistics still update
            assert torch.equal(value, target.state_dict()[key]), key


def test_empty_labelled_set_is_a_clear_error(tiny_cache):
    from hourglass.errors import AlposeError

    with pytest.raises(AlposeError, match="labelled set is empty"):
        fit(
            StackedHourglass(1, 16, 2, 16),
            tiny_cache,
            np.array([], int),
            [0],
            small_config(),
            progress=False,
        )
