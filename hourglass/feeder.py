"""Batches built ahead in a background thread while the main thread runs the step.

``Prefetcher(items, produce, ahead, device)`` yields ``produce(item)`` for every item, in order.
With ``ahead > 0`` one worker thread calls ``produce`` up to ``ahead`` items ahead of the consumer;
with ``ahead = 0`` it is called inline. One thread calls ``produce`` in item order either way, so
the random draws of an augmenter inside it happen in the same order and the batches are the same
as the plain loop's (bit for bit on the CPU).

On CUDA the worker runs ``produce`` on a stream of its own, so the host-to-device copies from
pinned memory (:func:`to_device`) overlap the step; the consumer's stream waits (on the device,
not the host) for that batch's event, and the batch's tensors are marked as used on it. An
exception in the worker is raised in the consumer; leaving the loop early (``break``, an exception
or ``KeyboardInterrupt`` in the loop body) and :meth:`Prefetcher.close` stop the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

T = TypeVar("T")

_DONE = object()  # the worker's last message
_POLL_S = 0.05  # how often a worker blocked on a full queue checks for a stop


@dataclasses.dataclass
class _Failure:
    """An exception raised by ``produce`` in the worker, to be raised again in the consumer."""

    error: BaseException


def to_device(array: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """``array`` as a tensor on ``device``: on CUDA copied from pinned memory without blocking
    the host (``non_blocking``); on the CPU the array's own memory (no copy)."""
    t = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if device.type != "cuda":
        return t.to(device)
    if t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def tensors(value: Any) -> Iterator[Tensor]:
    """Every tensor in ``value`` (nested tuples, lists, dicts and dataclasses)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from tensors(getattr(value, f.name))


class _CudaHandoff:
    """Hands batches made on the worker's CUDA stream over to the consumer's stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def context(self) -> contextlib.AbstractContextManager:
        """The worker's stream as its current one (also selects the device in that thread)."""
        return torch.cuda.stream(self.stream)

    def record(self) -> Any:
        """An event after everything the worker queued so far for this batch."""
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def receive(self, value: T, event: Any) -> T:
        """Make the consumer's stream wait for ``event`` and keep ``value``'s memory alive on it."""
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)
        for t in tensors(value):
            if t.is_cuda:
                t.record_stream(current)
        return value


class Prefetcher(Generic[T]):
    """Iterate ``produce(item)`` over ``items``, ``ahead`` items ahead in a worker thread.

    Use as a context manager (``with Prefetcher(...) as batches: for b in batches: ...``) so the
    worker stops however the loop ends; iterate once.
    """

    def __init__(
        self,
        items: Iterable[Any],
        produce: Callable[[Any], T],
        ahead: int = 2,
        device: torch.device | None = None,
    ) -> None:
        self.items, self.produce, self.ahead = items, produce, max(int(ahead), 0)
        self.device = device
        self._queue: queue.Queue = queue.Queue(maxsize=max(self.ahead, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handoff: _CudaHandoff | None = None

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        if self.ahead == 0:
            for item in self.items:
                yield self.produce(item)
            return
        self._start()
        try:
            while True:
                message = self._queue.get()
                if message is _DONE:
                    return
                if isinstance(message, _Failure):
                    raise message.error
                value, event = message
                yield value if self._handoff is None else self._handoff.receive(value, event)
        finally:
            self.close()

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the worker (it finishes the ``produce`` call it is in) and drop queued batches."""
        self._stop.set()
        thread, self._thread = self._thread, None
        while thread is not None and thread.is_alive():
            self._drain()
            thread.join(_POLL_S)
        self._drain()

    def _start(self) -> None:
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("a Prefetcher is iterated once")
        if self.device is not None and self.device.type == "cuda":
            self._handoff = _CudaHandoff(self.device)
        self._thread = threading.Thread(target=self._work, name="alpose-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        """The worker: produce every item in order, hand each over through the queue."""
        try:
            with self._handoff.context() if self._handoff else contextlib.nullcontext():
                for item in self.items:
                    if self._stop.is_set():
                        return
                    value = self.produce(item)
                    event = self._handoff.record() if self._handoff else None
                    if not self._put((value, event)):
                        return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            self._put(_Failure(exc))

    def _put(self, message: object) -> bool:
        """Queue ``message`` unless the consumer stopped; False when it did."""
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
