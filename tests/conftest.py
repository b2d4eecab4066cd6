"""Shared fixtures: where ``../shared`` lives, and a helper to run the CLI in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """``../shared`` beside the checkout, or ``$ALPOSE_SHARED``."""
    return Path(os.environ.get("ALPOSE_SHARED", REPO.parent / "shared"))


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
    from active.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out = capsys.readouterr()
        return status, out.out, out.err

    return run
