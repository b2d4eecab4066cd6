"""Device choice, mixed precision and compilation: CPU by default, CUDA with bf16 autocast when
present; optional ``torch.compile`` (mode ``reduce-overhead`` = CUDA graphs on a GPU)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

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


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False):
    """bf16 autocast on CUDA; on the CPU only when ``cpu`` (else a no-op: bit-exact determinism)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and cpu and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def compile_model(model: nn.Module, mode: str = "off", backend: str = "inductor") -> nn.Module:
    """``model`` itself (``off``) or ``torch.compile``d: ``default``, ``reduce-overhead`` (CUDA
    graphs on a GPU), ``max-autotune``. Modes belong to inductor; other backends take none."""
    mode = "off" if mode in (False, None) else str(mode)
    if mode not in COMPILE_MODES:
        raise AlposeError(f"train.compile={mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return model
    if backend != "inductor":
        return torch.compile(model, backend=backend)
    return torch.compile(model, mode=None if mode == "default" else mode)


def mark_step(mode: str) -> None:
    """Tell CUDA-graph trees a new training step begins (``reduce-overhead`` only)."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
