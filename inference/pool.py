"""Where photos are decoded and preprocessed: worker processes driven from the event loop, or threads.

`ProcessPool` gives each worker process one pipe. The event loop writes a job into an idle worker's
pipe and reads the answer when the pipe turns readable (`loop.add_reader`): no helper threads, no
locks. ProcessPoolExecutor, which this replaces, moves every job through a call queue, a feeder
thread, a result queue and a manager thread; in the bot on the 2-core machine py-spy put those at
~2 ms of CPU per photo between the two processes, with threads that took the GIL from the event loop.
This pool's own cost, measured: ~0.1 ms per photo in the worker, 0.2–0.4 ms on the event loop. A
worker that dies (a crashing decoder, the OOM killer) fails only the photo it held and is replaced;
ProcessPoolExecutor broke for good instead, and every later photo failed.

This module imports nothing heavy: a worker process imports it before numpy, and must pin numpy's
native threads first (`one_native_thread`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, ParamSpec, Protocol, TypeVar

from inference.errors import WorkerLost

log = logging.getLogger(__name__)

NATIVE_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
STOP_TIMEOUT_S = 5.0
ABANDONED_AFTER_S = 10.0  # a worker still on a photo its caller gave up on this long after is stopped
# A picklable (function, args) a worker process runs once it has imported its modules.
Setup = tuple[Callable[..., object], tuple[object, ...]]

P = ParamSpec("P")
R = TypeVar("R")


class Pool(Protocol):
    async def start(self) -> None: ...

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def close(self) -> None: ...


def one_native_thread() -> None:
    """One OpenBLAS/OpenMP thread per worker process: a process per core already.

    BLAS threads on top (busy-waiting after each call) made two pool processes fight the model for
    two cores: on the 2-core development machine `photobot bench inference --models digits` went from
    77 to 158 photos/s at 8 callers with one native thread per pool process. The variables are read
    when numpy's libraries load, so this runs before a worker's first job imports numpy. A value set
    in the environment is left as it is.
    """
    for name in NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def native_threads() -> dict[str, str | None]:
    """What this process runs with (the tests ask a pool process)."""
    return {name: os.environ.get(name) for name in NATIVE_THREAD_VARIABLES}


# ------------------------------------------------------------------------------- worker processes


class _Job:
    __slots__ = ("future", "payload")

    def __init__(self, payload: bytes, future: asyncio.Future[Any]) -> None:
        self.payload = payload
        self.future = future


class _Worker:
    __slots__ = ("conn", "job", "process", "up")

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.job: _Job | None = None
        self.up = False  # the process has said it runs (its first message)


class ProcessPool:
    """`size` spawned worker processes; `run` sends a picklable call to an idle one and awaits it.

    A call whose caller gives up (a deadline) keeps its worker busy until it ends; one still running
    `abandoned_after_s` later is stopped and its worker replaced, so a pathological photo cannot take
    a worker away for good.
    """

    def __init__(
        self,
        size: int,
        *,
        preload: tuple[str, ...] = (),
        setup: Setup | None = None,
        abandoned_after_s: float = ABANDONED_AFTER_S,
    ) -> None:
        self.size = max(1, size)
        self.preload = preload  # modules each worker imports before it counts as started
        self.setup = setup  # (function, args) each worker runs after its imports, e.g. a memory limit
        self.abandoned_after_s = abandoned_after_s
        self._workers: list[_Worker] = []
        self._idle: collections.deque[_Worker] = collections.deque()
        self._queue: collections.deque[_Job] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[None] | None = None
        self._closed = False
        self.replaced = 0  # workers that died and were started again
        # Bytes written into the pipes, on the event loop: callers hand over files by path, since a
        # 20 MB photo pickled through a pipe held the loop ~94 ms (the tests read this).
        self.sent_bytes = 0

    @property
    def _started_loop(self) -> asyncio.AbstractEventLoop:
        """The loop `start` ran on: the workers' pipes are watched there."""
        if self._loop is None:
            raise RuntimeError("the process pool is not started")
        return self._loop

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def start(self) -> None:
        """Start every worker and wait until each runs and has imported `preload`, so no user pays for
        starting one (a first photo paid ~150 ms here for the imports, ~0.4 s with 16 workers at once)."""
        self._loop = asyncio.get_running_loop()
        self._starting = self._loop.create_future()
        for _ in range(self.size):
            self._spawn()
        try:
            await self._starting
        except WorkerLost:
            await self.close()
            raise
        log.info("decoding and preprocessing in %d processes (%s)", len(self.pids), sorted(self.pids))

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """fn(*args, **kwargs) in a worker; its exception is raised here. Cancelling drops the answer."""
        if self._loop is None or self._closed or not self._workers:
            raise WorkerLost("no decode process is running")
        payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        job = _Job(payload, self._loop.create_future())
        self._queue.append(job)
        self._dispatch()
        try:
            result: R = await job.future  # what `fn` returned, unpickled from the worker
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        return result

    async def close(self) -> None:
        """Fail what is queued, close the pipes (workers exit at end of input) and wait for them."""
        self._closed = True
        while self._queue:
            _fail(self._queue.popleft().future, WorkerLost("the decode pool was closed"))
        workers, self._workers = self._workers, []
        self._idle.clear()
        for worker in workers:
            self._detach(worker)
            if worker.job is not None:
                _fail(worker.job.future, WorkerLost("the decode pool was closed"))
        await asyncio.to_thread(_join, [w.process for w in workers])

    # The event loop's side.

    def _spawn(self) -> _Worker:
        context = multiprocessing.get_context("spawn")  # not fork: forking TensorFlow's threads can deadlock
        here, there = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve, args=(there, self.preload, self.setup), name="photobot-decode", daemon=True
        )
        process.start()
        there.close()
        worker = _Worker(process, here)
        self._workers.append(worker)
        self._started_loop.add_reader(here.fileno(), self._on_readable, worker)
        return worker

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            job = self._queue.popleft()
            if job.future.done():  # cancelled while it waited (a deadline, a closing bot)
                continue
            worker = self._idle.popleft()
            worker.job = job
            self.sent_bytes += len(job.payload)
            try:
                worker.conn.send_bytes(job.payload)
            except OSError:
                self._replace(worker)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            answer = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._replace(worker)
            return
        if not worker.up:  # the first message: the process runs
            worker.up = True
            if self._starting is not None and all(w.up for w in self._workers):
                _settle(self._starting, None)
        else:
            job, worker.job = worker.job, None
            if job is not None and not job.future.done():
                try:
                    ok, value = pickle.loads(answer)
                except Exception as error:  # e.g. a class the worker has and we lack
                    ok, value = False, WorkerLost(f"the answer could not be read: {error!r}")
                if ok:
                    _settle(job.future, value)
                else:
                    _fail(job.future, value)
        self._idle.append(worker)
        self._dispatch()

    def _abandon(self, job: _Job) -> None:
        """The caller gave up on `job`: if a worker is on it, stop that worker unless it ends soon."""
        worker = next((w for w in self._workers if w.job is job), None)
        if worker is not None and not self._closed:
            self._started_loop.call_later(self.abandoned_after_s, self._stop_if_still_on, worker, job)

    def _stop_if_still_on(self, worker: _Worker, job: _Job) -> None:
        if worker.job is job and worker in self._workers:
            log.warning(
                "decode process %s still on a photo %.0f s after its caller gave up; stopping it",
                worker.process.pid,
                self.abandoned_after_s,
            )
            worker.process.kill()  # its pipe closes: `_on_readable` sees the end and replaces it

    def _replace(self, worker: _Worker) -> None:
        """A worker died: fail its photo, start another in its place (unless it never started)."""
        self._detach(worker)
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        worker.process.join(timeout=1.0)  # it has closed its pipe, so it is exiting now
        log.error(
            "decode process %s ended (exit code %s)%s",
            worker.process.pid,
            worker.process.exitcode,
            " while preparing a photo" if worker.job else "",
        )
        if worker.job is not None:
            _fail(worker.job.future, WorkerLost("the photo's decoding process ended unexpectedly"))
        if not worker.up:  # it failed to start (an import error, say): starting more would loop
            lost = WorkerLost(f"a decode process could not start (exit code {worker.process.exitcode})")
            if self._starting is not None:
                _fail(self._starting, lost)
        elif not self._closed:
            self.replaced += 1
            self._spawn()
        if not self._workers:
            while self._queue:
                _fail(self._queue.popleft().future, WorkerLost("no decode process is running"))

    def _detach(self, worker: _Worker) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._started_loop.remove_reader(worker.conn.fileno())
        worker.conn.close()


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _join(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.terminate()
            process.join()


# The worker's side.


def _serve(conn: Connection, preload: tuple[str, ...] = (), setup: Setup | None = None) -> None:
    """A worker process: import `preload`, run `setup`, then read a call, run it, write (ok, result)
    back, until the pipe closes. A module that fails to import ends the process before it reports:
    the pool does not start.

    Signals are the bot's to handle: it finishes the photos in flight and then closes the pipes, so
    a Ctrl-C or a SIGTERM sent to the whole process group must not kill a worker mid-photo.
    """
    one_native_thread()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for name in preload:
        importlib.import_module(name)
    if setup is not None:  # after the imports: a memory limit is measured from the size they leave
        function, args = setup
        function(*args)
    conn.send_bytes(pickle.dumps((True, os.getpid())))
    while True:
        try:
            fn, args, kwargs = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            answer = pickle.dumps((True, fn(*args, **kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # any error is the caller's to see, not this loop's
            answer = _pickled_error(error)
        try:
            conn.send_bytes(answer)
        except OSError:
            return


def _pickled_error(error: Exception) -> bytes:
    try:
        return pickle.dumps((False, error), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that cannot be pickled still reaches the caller
        return pickle.dumps((False, RuntimeError(f"{type(error).__name__}: {error}")))


# ------------------------------------------------------------------------------- threads


class ThreadPool:
    """The same interface on threads: for tests and machines where processes are unwelcome."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="photobot-decode")

    async def start(self) -> None:
        pass

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_pool(kind: str, size: int, *, preload: tuple[str, ...] = (), setup: Setup | None = None) -> Pool:
    """Processes (importing `preload` and running `setup` as they start) or threads (which share this
    process's imports and limits: `setup` is for processes only)."""
    return ProcessPool(size, preload=preload, setup=setup) if kind == "process" else ThreadPool(size)
