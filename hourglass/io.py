"""Atomic file writes: a crash never leaves a half-written file where a good one was.

A write that fails for lack of space or permission (disk full, a read-only folder) becomes one
:class:`AlposeError` naming the file; the file that was there before is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hourglass.errors import AlposeError

# OS errors inside a write block that are about the write itself (not about some file it reads).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _write_error(path: Path, err: OSError) -> AlposeError:
    reason = err.strerror or str(err)
    return AlposeError(
        f"cannot write {path} ({reason}); free disk space or choose a writable folder "
        "(paths.runs / paths.data), then rerun the same command: finished work is kept"
    )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        try:
            yield Path(tmp)
        except OSError as err:
            if err.errno in _WRITE_ERRNOS:
                raise _write_error(path, err) from err
            raise
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
            os.replace(tmp, path)
        except OSError as err:
            raise _write_error(path, err) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def save_torch(path: str | Path, obj: Any) -> str:
    """``torch.save`` atomically (load it back with ``weights_only=True``); returns the sha256."""
    import torch  # heavy: caches and JSON are written without torch (`alpose evaluate`, `prepare`)

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a Python file: a full disk raises OSError, not RuntimeError
            torch.save(obj, f)
        digest = sha256_file(tmp)
    return digest


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- test-only fault injection ----------------------------------------------------------------
KILL_ENV = "ALPOSE_TEST_KILL_AT"
_kill_hits: dict[str, int] = {}


def kill_point(name: str) -> None:
    """TEST ONLY: SIGKILL this process at the n-th pass of point ``name`` when
    ``ALPOSE_TEST_KILL_AT=name[:n]`` is set (tests/active/loop/test_faults.py); otherwise does nothing."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _kill_hits[name] = _kill_hits.get(name, 0) + 1
    if _kill_hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
