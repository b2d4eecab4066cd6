"""No host-device sync per training step or per evaluation batch: the values the host reads
(finiteness, running loss, loss totals, coordinates) stay on the device and are read once.

On the CPU a sync is a tensor turned into a Python value (``item``, ``bool``, ``float``, ``int``,
``tolist``, ``numpy``, ``cpu``) by the project's code; counted in the main thread, where the step
runs. The count of a fit must not grow with the number of steps (per-epoch work only)."""

import sys
import threading
from pathlib import Path

import pytest
import torch
from helpers.paths import REPO
from helpers.training import small_config

from hourglass.augment import AugmentConfig
from hourglass.evaluate import predict_coords
from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig, fit, selection_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
PACKAGE = str(REPO / "hourglass")
CONVERSIONS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def syncs(monkeypatch):
    """A list that gets the name of every tensor-to-host conversion made by hourglass code."""
    calls: list[str] = []
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE) and threading.current_thread() is threading.main_thread():
                calls.append(f"{_name} in {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=4, seed=1, eval_batch_size=8, select_by="loss")
    return small_config(**{**base, **kw})


def fit_syncs(data, calls, steps, **kw) -> list[str]:
    torch.manual_seed(0)
    calls.clear()
    model = StackedHourglass(1, 8, 2, 16)
    idx = data.indices("train")[: 4 * steps]
    fit(model, data, idx, data.indices("val")[:8], config(**kw), progress=False)
    return sorted(calls)


@pytest.mark.parametrize("path", ["sample", "batch"])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_training_step_never_reads_a_tensor_on_the_host(tiny_cache, syncs, path, prefetch):
    kw = dict(prefetch=prefetch, augment=AugmentConfig(path=path))
    few, many = fit_syncs(tiny_cache, syncs, 2, **kw), fit_syncs(tiny_cache, syncs, 7, **kw)
    assert few == many  # 10 more steps, not one more conversion
    train_py = [c for c in many if "train.py" in c]
    assert len(train_py) <= 2 * 2, train_py  # per epoch: the step results and the selection loss


def test_evaluation_gathers_on_the_device_and_reads_once(tiny_cache, syncs):
    torch.manual_seed(0)
    model = StackedHourglass(1, 8, 2, 16)
    rows = tiny_cache.indices("val")[:24]
    counts = []
    for batch_size in (24, 3):  # one batch, then eight
        syncs.clear()
        coords = predict_coords(model, tiny_cache, rows, loss="ce", batch_size=batch_size)
        cfg = config(eval_batch_size=batch_size)
        selection_metrics(model, tiny_cache, rows, cfg, CPU)
        counts.append(sorted(syncs))
        assert coords.shape == (24, tiny_cache.num_joints, 2)
    assert counts[0] == counts[1], counts
