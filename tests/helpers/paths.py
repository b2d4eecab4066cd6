"""Where the checkout and the reference data beside it live."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    """``../shared`` beside the checkout, or ``$ALPOSE_SHARED``."""
    return Path(os.environ.get("ALPOSE_SHARED", REPO.parent / "shared"))
