"""One GPU per job: a parallel job claims a free GPU through per-GPU lock slots.

Every visible GPU has a slot file ``<lock dir>/gpu_<host>_<id>.lock``; ``id`` is the GPU's UUID
where torch reports one (so two jobs whose ``CUDA_VISIBLE_DEVICES`` number the GPUs differently,
e.g. SLURM tasks that each see their own GPU as 0, still name the same GPU alike), else its
``CUDA_VISIBLE_DEVICES`` entry, else its index. A job takes the first slot it can ``flock``
exclusively without blocking and keeps it for the whole job; when every slot is held it prints one
``waiting for a free GPU`` line and queues: the first waiter in line (holding
``queue_<host>.lock``) polls the slots and takes the first one freed, the others block on the
queue lock. A killed job drops its slot with its process (flock); the slot file records its last
holder (pid, host, time). On release the job's cached CUDA memory is handed back
(``torch.cuda.empty_cache``).

The lock dir is per machine and per user: ``$ALPOSE_GPU_LOCK_DIR`` or
``<tmp>/alpose-gpus-<uid>/``, the same for joblib workers, ``jobs=N`` processes and SLURM tasks
on one node; the host in the slot names keeps nodes apart if it is set to a shared folder.
With one visible GPU parallel jobs take turns on it (one job at a time is the point: a second job
would halve the first's speed and share its memory); ``ALPOSE_GPU_CLAIM=off`` turns claiming off
(every job on the device as given). ``device=cpu``, an explicit ``cuda:<i>`` or no GPU: nothing
is claimed.
"""

from __future__ import annotations

import fcntl
import gc
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO

import torch

LOCK_DIR_ENV = "ALPOSE_GPU_LOCK_DIR"
CLAIM_ENV = "ALPOSE_GPU_CLAIM"  # off / 0 / false: no claims


def default_lock_dir() -> Path:
    """``$ALPOSE_GPU_LOCK_DIR``, else ``<tmp>/alpose-gpus-<uid>`` (one per machine and user)."""
    env = os.environ.get(LOCK_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / f"alpose-gpus-{os.getuid()}"


def visible_gpu_count() -> int:
    """GPUs this process sees (``torch.cuda.device_count()``; 0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_gpu_ids(n_gpus: int) -> list[str]:
    """Physical ids of the first ``n_gpus`` visible GPUs: UUIDs where torch reports them, else the
    ``CUDA_VISIBLE_DEVICES`` entries, else ``0 .. n_gpus-1``."""
    entries = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    entries = [e for e in entries if e]
    ids = entries[:n_gpus] if len(entries) >= n_gpus else [str(i) for i in range(n_gpus)]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.device_count() >= n_gpus:
        with suppress(AttributeError, RuntimeError):  # an old torch or a driver without UUIDs
            ids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(n_gpus)]
    return ids


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def slot_names(n_gpus: int, ids: Sequence[str] | None = None, host: str | None = None) -> list[str]:
    """Slot file names ``gpu_<host>_<id>.lock`` of the visible GPUs (``ids``: their physical ids)."""
    ids = list(ids) if ids is not None else visible_gpu_ids(n_gpus)
    if len(ids) != n_gpus:
        raise ValueError(f"{n_gpus} GPUs but {len(ids)} ids: {ids}")
    host = _safe(host or socket.gethostname())
    return [f"gpu_{host}_{_safe(i)}.lock" for i in ids]


def _take_first_free(handles: list[IO[str]]) -> int | None:
    for i, handle in enumerate(handles):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        return i
    return None


def _say(line: str) -> None:
    print(line, flush=True)


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        gc.collect()  # the job's tensors are unreachable by now; hand their blocks back
        torch.cuda.empty_cache()


@contextmanager
def claim_gpu(
    lock_dir: Path,
    n_gpus: int,
    ids: Sequence[str] | None = None,
    *,
    host: str | None = None,
    poll: float = 0.5,
    on_wait: Callable[[str], None] | None = _say,
) -> Iterator[int]:
    """Hold a free one of ``n_gpus`` GPU slots for the block; yields its index (0 .. n_gpus-1).

    ``ids`` and ``host`` name the slots (default: :func:`visible_gpu_ids`, this host), so tests
    can hand out fake GPUs. When every slot is held, ``on_wait`` gets one line and the call waits
    in line, polling every ``poll`` seconds once first in line. On exit the CUDA cache is emptied
    (where CUDA is initialised) and the slot released.
    """
    if n_gpus < 1:
        raise ValueError(f"claim_gpu needs at least one GPU, got {n_gpus}")
    names = slot_names(n_gpus, ids, host)
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as others:
        handles = [others.enter_context(open(lock_dir / name, "a+")) for name in names]
        held = _take_first_free(handles)
        if held is None:
            if on_wait is not None:
                on_wait(f"  waiting for a free GPU: all {n_gpus} in use (slots in {lock_dir})")
            queue_name = f"queue_{_safe(host or socket.gethostname())}.lock"
            with open(lock_dir / queue_name, "a+") as queue:
                fcntl.flock(queue, fcntl.LOCK_EX)  # first in line polls, the rest wait here
                while (held := _take_first_free(handles)) is None:
                    time.sleep(poll)
        slot = handles[held]
        for handle in handles:
            if handle is not slot:
                handle.close()  # (closed again by the stack: a no-op)
        slot.truncate(0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        slot.write(f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n")
        slot.flush()
        try:
            yield held
        finally:
            _free_cuda_cache()
            fcntl.flock(slot, fcntl.LOCK_UN)


def claiming_enabled() -> bool:
    """False when ``ALPOSE_GPU_CLAIM`` is off, 0 or false."""
    return os.environ.get(CLAIM_ENV, "").strip().lower() not in ("off", "0", "false", "no")


@contextmanager
def claimed_device(
    device: str,
    n_gpus: int | None = None,
    lock_dir: Path | None = None,
    on_wait: Callable[[str], None] | None = _say,
) -> Iterator[str]:
    """The device one parallel job runs on, held for the block.

    ``auto``/``cuda`` with visible GPUs (``n_gpus``, default :func:`visible_gpu_count`) ->
    ``cuda:<i>`` of a claimed free GPU (also made torch's current device); anything else
    (``cpu``, ``cuda:<i>``, no GPU, claiming off) -> ``device`` unchanged, nothing claimed.
    """
    if device not in ("auto", "cuda") or not claiming_enabled():
        yield device
        return
    n = visible_gpu_count() if n_gpus is None else int(n_gpus)
    if n < 1:
        yield device
        return
    with claim_gpu(lock_dir or default_lock_dir(), n, on_wait=on_wait) as index:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.set_device(index)
        yield f"cuda:{index}"
