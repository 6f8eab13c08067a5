"""The micro-batching engine: one worker thread per model, one compiled call per batch.

A bot that calls `model.predict` in a handler serves one photo at a time, and `predict` alone costs
~50 ms per call. Here each model has a worker (in the spirit of TensorFlow Serving's and Triton's
dynamic batching, and of aiosqlite's one-thread-behind-a-queue): callers on the event loop `submit`
an already preprocessed input and get an asyncio future; the worker takes what is queued — up to
`max_batch` rows, or whatever arrived within `max_wait_ms` of the oldest waiting photo — runs ONE
compiled call on the whole batch, and resolves each caller's future with `loop.call_soon_threadsafe`.

The queue is bounded (a full queue refuses at once with EngineBusy instead of growing latency without
limit), each request carries a deadline (an expired one is answered with DeadlineExceeded and never
costs model time), and a request that makes the batch fail is retried alone, so it fails alone.

Every request names the `Runner` (a loaded, warmed model version) it was prepared for. A hot swap
therefore needs nothing from the worker: requests prepared for the old version run on the old one,
new requests on the new one, and the old version is freed when its last request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from inference.errors import DeadlineExceeded, EngineBusy, InferenceError, ModelUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Outputs = Any  # an array, or a list / tuple / dict of arrays, with the batch on axis 0


@dataclass(frozen=True)
class EngineConfig:
    """The engine's knobs, from the settings' ENGINE_* variables (defaults chosen with `photobot bench
    inference` on 2 CPU cores: docs/performance.md)."""

    max_batch: int = 16  # rows per compiled model call (a digit photo is one row per digit)
    max_wait_ms: float = 5.0  # how long the oldest waiting photo may wait for others on their way
    queue_size: int = 256  # photos waiting per model (and in decoding) before callers get EngineBusy
    deadline_s: float = 10.0  # a photo not answered by then fails with DeadlineExceeded
    workers: int = 0  # decode/preprocess threads (or processes); 0 means one per CPU core
    pool: str = "process"  # "thread" or "process" (decoding and preprocessing free of the GIL)
    runtime: str = "auto"  # "auto", "keras" or "lite": what runs the models (see inference.lite)
    batch_sizes: tuple[int, ...] = ()  # padded shapes where the backend compiles per shape; () = 1, 2, 4, …
    reload_poll_s: float = 2.0  # how often the store's `active` pointers are checked; 0 turns it off
    decode_memory_mb: int = 1024  # address space a decode process may add to its start (RLIMIT_AS); 0: no cap

    def decode_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def padded_sizes(self) -> tuple[int, ...]:
        """Batch shapes used where each new shape means a new compilation (JAX, XLA)."""
        if self.batch_sizes:
            return tuple(sorted(set(self.batch_sizes)))
        sizes, size = [], 1
        while size < self.max_batch:
            sizes.append(size)
            size *= 2
        return (*sizes, max(1, self.max_batch))


class Runner(Protocol):
    """One loaded, warmed model version, as the worker sees it (see `inference.loading.LoadedModel`)."""

    def run(self, batch: np.ndarray) -> Outputs: ...


@dataclass
class BatchStats:
    """What the worker did: the test of "batching really batches" and the benchmark's batch sizes."""

    batches: int = 0  # compiled model calls
    requests: int = 0  # requests answered by a model call
    rows: int = 0
    expired: int = 0  # requests dropped because their deadline had passed
    failed: int = 0  # requests whose model call or finishing step raised
    sizes: Counter[int] = field(default_factory=Counter)  # rows per call → number of calls

    def snapshot(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "rows": self.rows,
            "expired": self.expired,
            "failed": self.failed,
            "mean_rows": round(self.rows / self.batches, 2) if self.batches else 0.0,
            "sizes": dict(sorted(self.sizes.items())),
        }


@dataclass(frozen=True)
class Timed(Generic[T]):
    """A finished request: the value of its finishing step, and where its time went."""

    value: T
    queue_ms: float  # from submit to the start of its batch
    model_ms: float  # the compiled call of its batch
    batch_rows: int  # rows in that call


@dataclass(eq=False)
class _Request:
    runner: Runner
    inputs: np.ndarray
    finish: Callable[[Outputs], Any]  # requests of every answer type share the queue
    future: asyncio.Future[Timed[Any]]
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic()
    enqueued: float


class BatchWorker:
    """Owns one model name: a bounded queue and a thread that runs batches on it."""

    def __init__(self, name: str, config: EngineConfig, *, coming: Callable[[], int] | None = None) -> None:
        """`coming` says how many photos are still being prepared and may join a batch (the Classifier's
        count): the worker waits up to max_wait_ms only while it is above zero, so a lone photo never
        waits for company that is not on its way. Without it the worker always waits up to max_wait_ms.
        """
        self.name = name
        self.config = config
        self._coming = coming
        self.stats = BatchStats()
        self._queue: deque[_Request] = deque()
        self._rows_queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread. Requests submitted before wait in the queue (e.g. during warm-up)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
            self._thread.start()

    def queued(self) -> int:
        return len(self._queue)

    def submit(
        self,
        runner: Runner,
        inputs: np.ndarray,
        finish: Callable[[Outputs], T],
        *,
        deadline: float,
    ) -> asyncio.Future[Timed[T]]:
        """Queue `inputs` (rows on axis 0) for `runner`; the future gets `finish(outputs)` for those rows.

        Must be called on the event loop that awaits the future. Raises EngineBusy at once when the
        queue is full, ModelUnavailable when the worker is closing.
        """
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._closing:
                raise ModelUnavailable(f"the {self.name} engine is shutting down")
            if len(self._queue) >= self.config.queue_size:
                raise EngineBusy(
                    f"the {self.name} model has {len(self._queue)} photos waiting; try again in a moment"
                )
            request = _Request(runner, inputs, finish, loop.create_future(), loop, deadline, time.monotonic())
            self._queue.append(request)
            self._rows_queued += len(inputs)
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, answer the queued ones, and end the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # The worker thread.

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as error:  # the worker must outlive any one batch
                log.exception("%s: a batch failed unexpectedly", self.name)
                for request in batch:
                    _resolve(request, error=_as_inference_error(error))

    def _take_batch(self) -> list[_Request] | None:
        """Wait for work, then for more rows until max_batch or max_wait_ms after the oldest arrived
        (or, with a `coming` count, until no more photos are on their way)."""
        max_rows = max(1, self.config.max_batch)
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            until = self._queue[0].enqueued + self.config.max_wait_ms / 1000.0
            while self._rows_queued < max_rows and not self._closing and self._more_coming():
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Request] = []
            rows = 0
            while self._queue and (not batch or rows + len(self._queue[0].inputs) <= max_rows):
                request = self._queue.popleft()
                rows += len(request.inputs)
                self._rows_queued -= len(request.inputs)
                batch.append(request)
            return batch

    def _more_coming(self) -> bool:
        return self._coming is None or self._coming() > 0

    def _run(self, batch: list[_Request]) -> None:
        now = time.monotonic()
        live = []
        for request in batch:
            if request.future.cancelled():  # the caller gave up (its own deadline)
                self.stats.expired += 1
            elif now > request.deadline:
                self.stats.expired += 1
                _resolve(request, error=DeadlineExceeded("the photo waited too long for the model"))
            else:
                live.append(request)
        for group in _by_runner(live):
            self._run_group(group)

    def _run_group(self, group: list[_Request]) -> None:
        started = time.monotonic()
        try:
            inputs = group[0].inputs if len(group) == 1 else np.concatenate([r.inputs for r in group])
            outputs = group[0].runner.run(inputs)
        except Exception as error:
            if len(group) > 1:
                log.warning(
                    "%s: a batch of %d failed (%s); retrying one by one", self.name, len(group), error
                )
                for request in group:
                    self._run_group([request])
                return
            log.exception("%s: the model call failed", self.name)
            self.stats.failed += 1
            _resolve(group[0], error=_as_inference_error(error))
            return
        model_ms = (time.monotonic() - started) * 1000.0
        rows = len(inputs)
        self.stats.batches += 1
        self.stats.requests += len(group)
        self.stats.rows += rows
        self.stats.sizes[rows] += 1
        offset = 0
        for request in group:
            count = len(request.inputs)
            mine = slice_outputs(outputs, offset, offset + count)
            offset += count
            try:
                value = request.finish(mine)
            except Exception as error:
                log.exception("%s: turning model outputs into an answer failed", self.name)
                self.stats.failed += 1
                _resolve(request, error=_as_inference_error(error))
                continue
            queue_ms = (started - request.enqueued) * 1000.0
            _resolve(request, value=Timed(value, queue_ms, model_ms, rows))


def _by_runner(requests: Sequence[_Request]) -> list[list[_Request]]:
    """Group requests by the model version they were prepared for (two groups only around a swap)."""
    groups: dict[int, list[_Request]] = {}
    for request in requests:
        groups.setdefault(id(request.runner), []).append(request)
    return list(groups.values())


def slice_outputs(outputs: Outputs, start: int, stop: int) -> Outputs:
    """Rows start:stop of every array in a model's outputs (array, list, tuple or dict)."""
    if isinstance(outputs, dict):
        return {key: slice_outputs(value, start, stop) for key, value in outputs.items()}
    if isinstance(outputs, list | tuple):
        return type(outputs)(slice_outputs(value, start, stop) for value in outputs)
    return outputs[start:stop]


def _as_inference_error(error: Exception) -> InferenceError:
    if isinstance(error, InferenceError):
        return error
    return ModelUnavailable(f"the model could not answer this photo ({type(error).__name__}: {error})")


def _resolve(request: _Request, *, value: Any = None, error: BaseException | None = None) -> None:
    """Hand the result to the caller's event loop; a closed loop means nobody is waiting any more."""
    with contextlib.suppress(RuntimeError):
        request.loop.call_soon_threadsafe(_settle, request.future, value, error)


def _settle(future: asyncio.Future[Timed[Any]], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
