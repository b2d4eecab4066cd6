"""The feeder: batches prepared ahead in a worker thread are the plain loop's batches, in order;
worker errors reach the loop; the worker stops however the loop ends; pinned non-blocking copies
on CUDA; evaluation crops of the rows asked for are cut once."""

import contextlib
import functools
import threading

import numpy as np
import pytest
import torch
from helpers.real_fixtures import fixture_cache
from helpers.training import tiny_fit

from hourglass import feeder
from hourglass.augment import AugmentConfig, PoseAugmenter
from hourglass.augment_batch import BatchAugmenter, stage_batch
from hourglass.datasets import views
from hourglass.datasets.cache import load_cache
from hourglass.evaluate import predict_coords
from hourglass.feeder import Prefetcher, to_device
from hourglass.model import StackedHourglass

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alpose-prefetch"]


def test_prefetched_items_come_in_order_from_one_thread():
    seen = []

    def produce(i):
        seen.append(threading.current_thread().name)
        return i * i

    for ahead in (0, 1, 3):
        seen.clear()
        with Prefetcher(range(10), produce, ahead) as feed:
            assert list(feed) == [i * i for i in range(10)]
        assert len(set(seen)) == 1 and (seen[0] == "alpose-prefetch") == (ahead > 0)
    assert not workers()


class Boom(RuntimeError):
    pass


def test_a_worker_error_is_raised_in_the_loop_and_the_worker_ends():
    def produce(i):
        if i == 3:
            raise Boom("item 3")
        return i

    got = []
    with pytest.raises(Boom, match="item 3"), Prefetcher(range(10), produce, 2) as feed:
        got.extend(feed)
    assert got == [0, 1, 2]
    assert not workers()


@pytest.mark.parametrize("stop", [Boom, KeyboardInterrupt, None])
def test_leaving_the_loop_early_stops_a_blocked_worker(stop):
    made = []

    def produce(i):
        made.append(i)
        return i

    prefetcher = Prefetcher(range(1000), produce, 2)
    with pytest.raises(stop) if stop else contextlib.nullcontext(), prefetcher as feed:
        for i in feed:
            if i == 1:
                if stop is None:
                    break
                raise stop()  # the NaN guard, a kill, a failing step
    assert not prefetcher.running and not workers()
    assert len(made) <= 2 + 2 + 1  # consumed, queued, one being put
    with pytest.raises(RuntimeError, match="once"):
        list(prefetcher)


def test_a_break_in_a_generator_consumer_stops_the_worker():
    def outputs():
        with Prefetcher(range(100), lambda i: i, 1) as feed:
            yield from feed

    gen = outputs()
    assert next(gen) == 0 and workers()
    gen.close()
    assert not workers()


def test_to_device_pins_and_copies_without_blocking_only_for_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(
        torch.Tensor, "to", lambda self, *a, **kw: calls.append(("to", a, kw)) or self
    )
    array = np.arange(6, dtype=np.uint8)
    to_device(array, torch.device("cuda", 0))
    assert calls == ["pin", ("to", (torch.device("cuda", 0),), {"non_blocking": True})]
    calls.clear()
    out = to_device(array, CPU)
    assert calls == [("to", (CPU,), {})]
    out[0] = 9
    assert array[0] == 9  # the CPU shares the array's memory: no copy


class FakeStream:
    def __init__(self, name):
        self.name, self.waited = name, []

    def wait_event(self, event):
        self.waited.append(event)


class FakeEvent:
    def record(self, stream):
        self.stream, self.thread = stream, threading.current_thread().name


def test_cuda_batches_are_made_on_the_worker_stream_and_waited_for(monkeypatch):
    side, main = FakeStream("side"), FakeStream("main")
    current = threading.local()
    marked = []

    class Context:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            current.stream = self.stream

        def __exit__(self, *exc):
            current.stream = None

    class FakeCuda(torch.Tensor):
        is_cuda = True

        def record_stream(self, stream):
            marked.append(stream)

    monkeypatch.setattr(torch.cuda, "Stream", lambda device: side)
    monkeypatch.setattr(torch.cuda, "stream", Context)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: main)

    def produce(i):
        assert getattr(current, "stream", None) is side  # the copies go to the worker's stream
        return {"x": torch.zeros(1).as_subclass(FakeCuda), "i": i}

    with Prefetcher(range(3), produce, 2, torch.device("cuda", 0)) as feed:
        for n, batch in enumerate(feed):
            assert len(main.waited) == n + 1  # waited before the batch is handed out
            assert batch["i"] == n
    assert [e.stream for e in main.waited] == [side] * 3
    assert {e.thread for e in main.waited} == {"alpose-prefetch"}
    assert marked == [main] * 3  # each batch's tensors kept alive on the consumer's stream


def staged_arrays(staged):
    return [t.clone() for t in feeder.tensors(staged)] + [staged.host_joints, staged.vis]


@pytest.mark.parametrize("path", ["sample", "batch"])
def test_prefetched_training_batches_equal_the_inline_ones(tiny_cache, tmp_path, path):
    real = load_cache(fixture_cache(tmp_path, "mpii", {"train": 12}, size=64))
    cfg = AugmentConfig(rotate=30.0)
    for data in (tiny_cache, real):
        order = np.random.default_rng(0).permutation(12)
        parts = [order[i : i + 4] for i in range(0, 12, 4)]
        runs = []
        for ahead in (0, 2):
            aug = BatchAugmenter(cfg) if path == "batch" else PoseAugmenter(cfg)
            aug.reseed(5)
            stage = functools.partial(stage_batch, data, augmenter=aug, device=CPU)
            with Prefetcher(parts, stage, ahead) as feed:
                runs.append([staged_arrays(s) for s in feed])
        for inline, ahead in zip(*runs, strict=True):
            for a, b in zip(inline, ahead, strict=True):
                assert torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b)


def fit_weights(data, prefetch, path):
    augment = AugmentConfig(path=path, rotate=20.0)
    model, result = tiny_fit(
        data, 24, 6, epochs=2, seed=4, eval_batch_size=4, prefetch=prefetch, augment=augment
    )
    return model.state_dict(), result.history


@pytest.mark.parametrize("path", ["sample", "batch"])
def test_fit_with_and_without_prefetch_trains_the_same_weights(tiny_cache, path):
    (a, ha), (b, hb) = fit_weights(tiny_cache, 0, path), fit_weights(tiny_cache, 3, path)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [(h.train_loss, h.select_loss) for h in ha] == [
        (h.train_loss, h.select_loss) for h in hb
    ]


def test_evaluating_a_subset_of_a_big_cache_cuts_each_row_once(tmp_path, monkeypatch):
    data = load_cache(fixture_cache(tmp_path, "mpii", {"train": 8, "val": 4}, size=64))
    row_bytes = 64 * 64 * 3
    monkeypatch.setattr(views, "EVAL_MEMO_LIMIT", 5 * row_bytes)  # the 12 rows do not fit
    cut_rows = []
    real_cut = views._cut

    def counting_cut(data, idx, augmenter):
        cut_rows.extend(np.asarray(idx).tolist())
        return real_cut(data, idx, augmenter)

    monkeypatch.setattr(views, "_cut", counting_cut)
    val = data.indices("val")
    expected = real_cut(data, val, None)[0]
    for _ in range(3):  # three epochs of selection
        np.testing.assert_array_equal(views.model_images(data, val), expected)
        np.testing.assert_array_equal(views.model_images(data, val[::-1]), expected[::-1])
    assert sorted(cut_rows) == sorted(val.tolist())
    # Past the limit, the rows that do not fit are cut each time (and are still right).
    cut_rows.clear()
    more = data.indices("train")[:3]
    for _ in range(2):
        np.testing.assert_array_equal(views.model_images(data, more), real_cut(data, more, None)[0])
    assert sorted(cut_rows) == sorted(more[:1].tolist() + more[1:].tolist() * 2)
    model = StackedHourglass(1, 8, 2, 16)
    cut_rows.clear()
    for _ in range(2):
        predict_coords(model, data, val, batch_size=3, device=CPU)
    assert cut_rows == []  # inference reads the kept crops
