"""Device choice and mixed precision: CPU by default, CUDA with bf16 autocast when present."""

from __future__ import annotations

import contextlib

import torch

from hourglass.errors import AlposeError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AlposeError(
            "device=cuda asked for, but no CUDA GPU is visible; use device=cpu or auto"
        )
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op context on CPU (bit-exact determinism there)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
