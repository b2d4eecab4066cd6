"""Shared fixtures: the reference data, the CLI in-process, the tiny synthetic set, one thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import shared_root
from helpers.tiny import TINY_SYNTHETIC

from hourglass import numerics

# Every test computes as a default `alpose` run does: portable CPU numerics, set before torch loads.
numerics.apply("portable")


@pytest.fixture
def refdata() -> Path:
    """Path of ``shared/refdata``; skips the test cleanly where it is absent."""
    path = shared_root() / "refdata"
    if not path.is_dir():
        pytest.skip(f"{path} not present (the external test vectors live in ../shared)")
    return path


@pytest.fixture
def cli(capsys):
    """Run ``alpose ARGS`` in-process; returns (exit status, stdout, stderr)."""
    from active.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data folder holding the tiny synthetic cache that ``TINY_SYNTHETIC`` names (built once)."""
    from hourglass.datasets.cache import write_cache
    from hourglass.datasets.registry import cache_path, synthetic_identity
    from hourglass.datasets.synthetic_cache import build_synthetic_cache

    data_dir = tmp_path_factory.mktemp("data")
    cache = build_synthetic_cache(synthetic_identity(TINY_SYNTHETIC), workers=1, progress=False)
    write_cache(cache_path(TINY_SYNTHETIC, data_dir), cache)
    return data_dir


@pytest.fixture(scope="session")
def tiny_cache(tiny_data_dir):
    """The tiny synthetic set as a :class:`PoseCache`."""
    from hourglass.datasets.registry import load_dataset

    return load_dataset(TINY_SYNTHETIC, tiny_data_dir)


@pytest.fixture
def one_thread():
    """One torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny batches gain
    nothing from two, and a shared machine stalls them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data folder for one test module's smoke runs (the smoke set is rendered into it once)."""
    return tmp_path_factory.mktemp("smoke-data")


@pytest.fixture
def keep_torch_threads():
    """In-process runs with threads=1 set the process-wide torch thread count; put it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
