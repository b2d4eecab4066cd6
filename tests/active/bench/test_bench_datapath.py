"""``alpose bench``'s real data path: the MPII-size margin cache it builds (consistent crop fields,
reused when present), the cache read and host step rows and their JSON, and the bound they put
on the training estimate of a real dataset (bench and dry run). No timing assertions."""

import json

import h5py
import numpy as np
import pytest

from active.bench.speed import (
    SpeedRow,
    build_margin_cache,
    compose,
    link_baselines,
    margin_cache,
)
from active.bench.speed_report import estimate, format_estimate
from active.loop.workload import split_sizes, train_rate, work_of
from hourglass.datasets import cache as cache_mod
from hourglass.datasets import crops
from hourglass.datasets.cache import load_cache
from hourglass.datasets.views import model_batch, model_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "margin.h5"
    return build_margin_cache(path, rows=14, distinct=5)


def test_the_bench_cache_is_an_mpii_size_format_2_cache_with_consistent_crop_fields(bench_cache):
    with h5py.File(bench_cache, "r", locking=False) as f:
        ds = f["images"]
        assert ds.shape == (14, 293, 293, 3) and ds.dtype == np.uint8
        assert ds.chunks == (1, 293, 293, 3) and ds.compression is None and ds.fletcher32
        assert f.attrs["format_version"] == 2
    data = load_cache(bench_cache, in_memory=True)
    assert data.has_margin and data.image_size == 256 and len(data) == 14
    # Rows repeat the distinct persons: pixels and every field alike.
    np.testing.assert_array_equal(data.images[7], data.images[2])
    np.testing.assert_array_equal(data.window[12], data.window[2])
    assert data.images[:5].reshape(5, -1).std(1).min() > 5  # real pictures, not blank
    assert not np.array_equal(data.images[0], data.images[1])
    assert set(data.split_names[s] for s in data.split) == {"train", "val"}
    # Joints are in the evaluation crop's frame: back in the photo they are the window's joints,
    # and the stored window maps to the same photo pixels.
    photo = crops.apply(data.crop_to_image.astype(np.float64), data.joints.astype(np.float64))
    present = data.visibility >= 0
    centre = (photo[..., :2].max(1, where=present[..., None], initial=-1e9) * 0.5) + (
        photo[..., :2].min(1, where=present[..., None], initial=1e9) * 0.5
    )
    np.testing.assert_allclose(centre, data.window[:, :2], atol=0.05)
    stored_centre = crops.apply(data.stored_to_image, np.full((14, 1, 2), 146.0))[:, 0]
    np.testing.assert_allclose(stored_centre, data.window[:, :2], atol=0.05)
    # views.model_batch cuts training and evaluation crops from it.
    from hourglass.augment import AugmentConfig, PoseAugmenter

    aug = PoseAugmenter(AugmentConfig())
    aug.reseed(0)
    images, joints, vis = model_batch(data, np.array([0, 3, 9]), aug)
    assert images.shape == (3, 256, 256, 3) and joints.shape == (3, 16, 2)
    assert model_images(data, np.array([1])).max() > 0


def test_an_existing_bench_cache_is_reused_and_a_broken_one_rebuilt(tmp_path):
    logs = []
    path, built = margin_cache(tmp_path, 6, 2, "lzf", log=logs.append)
    assert built is not None and path.is_file() and len(logs) == 1
    again, built = margin_cache(tmp_path, 6, 2, "lzf", log=logs.append)
    assert again == path and built is None and len(logs) == 1
    path.write_bytes(b"broken")
    _, built = margin_cache(tmp_path, 6, 2, "lzf", log=logs.append)
    assert built is not None and load_cache(path, in_memory=True).images.shape[0] == 6


def test_data_path_rows_and_json(cli, tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, _ = cli(
        "bench",
        "--quick",
        "--models",
        "hourglass_paper",
        "--acquirers",
        "random",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--data-cache",
        str(tmp_path),
        "--data-rows",
        "30",
        "--json",
        str(out),
    )
    assert code == 0
    payload = json.loads(out.read_text())
    rows = {(r["what"], r["path"]): r for r in payload["rows"]}
    for key in [("cache read", p) for p in ("lazy", "memory", "fancy")] + [
        ("host step", p) for p in ("lazy", "memory")
    ]:
        r = rows[key]
        assert r["threads"] == 1 and r["device"] == "cpu" and r["model"] == "hourglass_paper"
        assert r["images"] > 0 and r["seconds"] > 0
        assert r["images_per_s"] == pytest.approx(r["images"] / r["seconds"], rel=1e-2)
    fancy = rows[("cache read", "fancy")]
    for p in ("lazy", "memory"):
        r = rows[("cache read", p)]
        assert r["baseline"] == "cache read cpu fancy"
        assert r["ratio"] == pytest.approx(r["images_per_s"] / fancy["images_per_s"], abs=0.01)
    sample = rows[("data path", "sample")]  # the per-sample CPU warp of the paper model
    assert rows[("host step", "memory")]["baseline_images_per_s"] == sample["images_per_s"]
    info = payload["data_cache"]
    assert info["rows"] == 30 and info["store_side"] == 293 and info["compression"] == "checksum"
    assert info["image_gb"] == pytest.approx(30 * 293 * 293 * 3 / 1e9, abs=1e-3)
    assert info["build_seconds"] is not None and info["in_memory_load_seconds"] >= 0
    assert "cache read" in stdout and "host step" in stdout and "fancy" in stdout

    # --data-rows 0 leaves them out.
    code, _, _ = cli(
        "bench", "--quick", "--models", "hourglass_small", "--acquirers", "random",
        "--device", "cpu", "--threads", "1", "--data-rows", "0", "--json", str(out),
    )  # fmt: skip
    assert code == 0
    assert not {"cache read", "host step"} & {
        r["what"] for r in json.loads(out.read_text())["rows"]
    }
    assert json.loads(out.read_text())["data_cache"] is None


def row(what, path, ips, device="cpu", model="hourglass_paper"):
    return SpeedRow(what, model, 256, device, 1, path, 10, 10 / ips, ips)


def paper_rows(lazy=50.0, memory=400.0):
    return [
        row("train", "batch", 1000.0, "cuda"),
        row("inference", "-", 4000.0, "cuda"),
        row("host step", "lazy", lazy),
        row("host step", "memory", memory),
    ]


def test_a_real_dataset_trains_no_faster_than_its_host_side(monkeypatch, tmp_path):
    cfg = compose("run", ["experiment=mpii_paper", f"paths.data={tmp_path}"])
    sizes, source = split_sizes(cfg)
    monkeypatch.setattr(cache_mod, "available_memory", lambda: 10**12)  # room for the images
    # the feeder builds batches in one worker thread: one core's host rate, whatever the threads
    est = estimate(cfg, paper_rows(), "cuda", sizes, source, threads=2)
    assert est["train_images_per_s"] == 400.0 and est["train_bound"] == "host data path"
    assert est["host_reads"].startswith("memory") and est["train_step_images_per_s"] == 1000.0
    work = work_of(cfg, sizes)
    assert est["seconds"]["train"] == pytest.approx(work["train_images"] / 400.0, abs=0.1)

    monkeypatch.setattr(cache_mod, "available_memory", lambda: 10**9)  # 6 GB will not fit
    est = estimate(cfg, paper_rows(), "cuda", sizes, source, threads=2)
    assert est["train_images_per_s"] == 50.0 and est["host_reads"].startswith("lazy")
    assert "bounded by the host data path" in format_estimate(est)

    fast = estimate(cfg, paper_rows(10**5, 10**5), "cuda", sizes, source, threads=2)
    assert fast["train_images_per_s"] == 1000.0 and fast["train_bound"] == "training step"

    synthetic = compose("run", ["experiment=quickstart"])
    rows = [row("train", "sample", 50.0, model=str(synthetic.model.name))]
    rows += [row("inference", "-", 80.0, model=str(synthetic.model.name)), *paper_rows(1.0, 1.0)]
    sizes = {"train": 8000, "val": 500, "test": 2000}
    est = estimate(synthetic, rows, "cpu", sizes, "config", threads=2)
    assert est["train_images_per_s"] == 50.0 and est["host_images_per_s_per_core"] is None


def test_the_dry_run_uses_the_same_host_bound(monkeypatch, tmp_path):
    from dataclasses import asdict

    from active.loop.plan import bench_speed as dry_speed

    monkeypatch.setattr(cache_mod, "available_memory", lambda: 10**9)
    cfg = compose("run", ["experiment=mpii_paper", f"paths.data={tmp_path}", "device=cuda"])
    path = tmp_path / "bench.json"
    payload = {"cpu_threads": 3, "rows": [asdict(r) for r in paper_rows(lazy=60.0)]}
    path.write_text(json.dumps(payload))
    speed = dry_speed(path, cfg)
    assert speed.train == 60.0 and "host data path" in speed.source and "lazy" in speed.source
    assert train_rate(1000.0, None, 4) == 1000.0 and train_rate(1000.0, 60.0, 0) == 60.0


def test_link_baselines_of_the_data_path_rows():
    rows = [
        row("cache read", "fancy", 40.0),
        row("cache read", "lazy", 1200.0),
        row("data path", "sample", 100.0),
        row("host step", "memory", 5000.0),
    ]
    link_baselines(rows)
    assert [r.ratio for r in rows] == [None, 30.0, None, 50.0]
    assert rows[3].baseline == "data path cpu sample"
