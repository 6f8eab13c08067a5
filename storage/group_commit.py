"""Group commit: the write queue and the two database connections under `Store`.

Every write is durable when its `await` returns. To make that cheap, callers queue small SQL functions
(`storage.sql`), one writer task takes whatever is queued (up to `max_batch`), runs the lot on the writer
connection's thread inside one `BEGIN IMMEDIATE … COMMIT`, each in its own savepoint, and resolves every
caller's future after the COMMIT. One caller's error (a forged button, a constraint) rolls back only its
savepoint; the others still commit. With 50 concurrent tasks this is one fsync per ~50 writes instead of
one per write.

Reads run on a second connection, so they never wait behind a batch of writes (WAL lets one writer and
many readers work at once, in this process and in others; so does PostgreSQL's MVCC).

Each connection lives on its own thread (`ConnectionThread`): SQLite's through aiosqlite, PostgreSQL's
(psycopg, synchronous) on a one-thread executor. The SQL functions are the same for both.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiosqlite

from storage.dialect import Connection
from storage.errors import StorageError, WriteFailed

log = logging.getLogger(__name__)

T = TypeVar("T")
SqlFunction = Callable[[Connection], T]


class ConnectionThread(Protocol):
    """A connection (`db`) and the one thread that may use it."""

    db: Connection

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(db, *args)` on the connection's thread."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Write:
    function: SqlFunction[Any]
    future: asyncio.Future[Any] = field(repr=False)


class GroupCommit:
    """The writer task and both connections; `Store` adds what the rows mean."""

    def __init__(self, writer: ConnectionThread, reader: ConnectionThread, max_batch: int) -> None:
        self._writer, self._reader = writer, reader
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()  # None: stop after what is queued
        self._write_task = asyncio.create_task(self._write_loop(), name="storage-writer")
        self._closed = False
        self.batches = 0  # group commits so far, for the benchmark
        self.writes = 0

    async def _stop_writing(self) -> None:
        """Commit what is queued, then close both connections (the caller has set `_closed`)."""
        await self._queue.put(None)
        await self._write_task
        await self._writer.close()
        await self._reader.close()

    async def _write(self, function: SqlFunction[T]) -> T:
        if self._closed:
            raise StorageError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(function, future))
        return await future

    async def _read(self, function: Callable[..., T], *, snapshot: bool = False) -> T:
        if self._closed:
            raise StorageError("the store is closed")
        call = _in_read_transaction(function) if snapshot else function
        return await self._reader.run(call)

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Write] = []
            item = await self._queue.get()
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Write]) -> None:
        functions = [write.function for write in batch]
        try:
            outcomes = await self._writer.run(_commit_batch, functions)
        except Exception as error:  # the whole transaction failed: nobody's write is durable
            # One line: during an outage every write fails alike, and each caller says what it lost.
            log.warning("group commit of %d writes failed: %s", len(batch), error)
            for write in batch:
                if not write.future.done():
                    write.future.set_exception(WriteFailed(f"the database write failed: {error}"))
            return
        self.batches += 1
        self.writes += len(batch)
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if write.future.done():  # the caller was cancelled; its write committed anyway
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)


async def open_connection(factory: Callable[[], Connection], *, sqlite: bool) -> ConnectionThread:
    """A connection opened by `factory()` on the thread that will own it."""
    if sqlite:
        return await _SqliteThread.open(factory)
    return await _OwnThread.open(factory)


class _SqliteThread:
    """An aiosqlite connection; we keep the raw handle so a whole batch runs in one thread hop."""

    def __init__(self, connection: aiosqlite.Connection, db: Connection) -> None:
        self._connection, self.db = connection, db

    @classmethod
    async def open(cls, factory: Callable[[], Connection]) -> _SqliteThread:
        opened: list[Connection] = []

        def connector() -> Any:  # aiosqlite wants a sqlite3.Connection; ours is one (`sqlite=True`)
            db = factory()
            opened.append(db)
            return db

        connection = aiosqlite.Connection(connector, iter_chunk_size=64)
        try:
            await connection
        except BaseException:
            # A connection that failed to open (a database too new, a file that is no database) stops
            # its thread with a future nobody awaits; the thread answers it on the event loop, so wait
            # for it here, while the loop still runs. `_thread` is private API, as `_execute` below.
            await asyncio.to_thread(connection._thread.join)
            raise
        return cls(connection, opened[0])

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(db, *args)` on the connection's own thread, in one hop.

        aiosqlite's public API costs one thread hop per statement; a group commit of 50 writes is ~300
        statements, so we hand the thread the whole batch at once through `_execute`, the internal
        method every public aiosqlite call goes through. It is private API: every storage test runs
        through here, so an aiosqlite release that changes it fails loudly, not silently.
        """
        # aiosqlite leaves its private `_execute` unannotated; it returns what `function` returns.
        result: T = await self._connection._execute(function, self.db, *args)  # type: ignore[no-untyped-call]
        return result

    async def close(self) -> None:
        await self._connection.close()


class _OwnThread:
    """A connection on a one-thread executor (PostgreSQL: psycopg's connections are synchronous)."""

    def __init__(self, executor: ThreadPoolExecutor, db: Connection) -> None:
        self._executor, self.db = executor, db

    @classmethod
    async def open(cls, factory: Callable[[], Connection]) -> _OwnThread:
        executor = ThreadPoolExecutor(1, thread_name_prefix="storage-db")
        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, factory)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, db)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        call = functools.partial(function, self.db, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.db.close)
        finally:
            self._executor.shutdown(wait=False)


def _commit_batch(db: Connection, functions: list[SqlFunction[Any]]) -> list[tuple[bool, Any]]:
    """One transaction, one savepoint per write; a failing write is rolled back alone."""
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for function in functions:
            db.execute("SAVEPOINT write")
            try:
                outcomes.append((True, function(db)))
            except Exception as error:
                db.execute("ROLLBACK TO write")
                outcomes.append((False, error))
            db.execute("RELEASE write")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _in_read_transaction(function: Callable[..., T]) -> Callable[..., T]:
    """Several SELECTs that must agree (statistics) read one snapshot."""

    def run(db: Connection, *args: Any) -> T:
        db.execute("BEGIN")
        try:
            return function(db, *args)
        finally:
            db.execute("COMMIT")

    return run
