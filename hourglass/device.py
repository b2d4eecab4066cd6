"""Device choice, mixed precision, CUDA settings and compilation: CPU by default, CUDA with bf16
autocast when present; cuDNN autotuning or deterministic kernels (``configure``); optional
``torch.compile`` (modes ``reduce-overhead`` and ``max-autotune`` use CUDA graphs on a GPU)."""

from __future__ import annotations

import contextlib
import os
import sys

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


# Inductor modes that replay CUDA graphs (their outputs are overwritten by the next replay).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def mark_step(mode: str) -> None:
    """Tell CUDA-graph trees a new training step begins (the CUDA-graph modes only)."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


# cuBLAS needs a fixed workspace for bit-exact results (read when cuBLAS starts in the process).
CUBLAS_DETERMINISTIC = ":4096:8"
_CUBLAS_FIXED = (CUBLAS_DETERMINISTIC, ":16:8")  # either makes cuBLAS deterministic


def configure(device: torch.device, deterministic: bool = False) -> None:
    """Process-wide CUDA settings for a fit on ``device`` (``train.deterministic``).

    false: cuDNN autotuning (``cudnn.benchmark``; training's shapes are fixed), fastest, results
    vary in the last bits between runs. true: deterministic algorithms only
    (``use_deterministic_algorithms``, an error for an op without one), deterministic cuDNN
    without autotuning and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``: repeatable on one GPU, slower.
    That variable must be set before the process's first cuBLAS call; set it in the environment
    when CUDA may have been used already (a warning says so). On the CPU nothing changes: its
    kernels are deterministic already.
    """
    if device.type != "cuda":
        return
    if deterministic and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in _CUBLAS_FIXED:
        if torch.cuda.is_initialized():
            print(
                "warning: train.deterministic=true: CUDA started before CUBLAS_WORKSPACE_CONFIG "
                f"was set; export CUBLAS_WORKSPACE_CONFIG={CUBLAS_DETERMINISTIC} before the run "
                "for bit-exact cuBLAS",
                file=sys.stderr,
            )
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
