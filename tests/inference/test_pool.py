"""The decode pool: worker processes driven from the event loop, replaced when they die."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from inference.classifier import read_photo
from inference.errors import WorkerLost
from inference.pool import ProcessPool, ThreadPool


@pytest.fixture
async def pool():
    pool = ProcessPool(2)
    await pool.start()
    yield pool
    await pool.close()


async def test_more_jobs_than_workers_are_all_answered_in_their_own_order(pool):
    answers = await asyncio.gather(*(pool.run(pow, i, 2) for i in range(50)))
    assert answers == [i * i for i in range(50)]
    assert len(pool.pids) == 2
    assert os.getpid() not in pool.pids


async def test_a_job_s_exception_reaches_the_caller_with_its_type(pool):
    with pytest.raises(ValueError, match="invalid literal"):
        await pool.run(int, "seven")
    assert await pool.run(int, "7") == 7


async def test_a_worker_that_dies_fails_only_its_job_and_is_replaced(pool):
    before = set(pool.pids)
    dying = asyncio.create_task(pool.run(os._exit, 3))
    others = [pool.run(pow, i, 3) for i in range(10)]
    with pytest.raises(WorkerLost):
        await dying
    assert await asyncio.gather(*others) == [i**3 for i in range(10)]
    assert pool.replaced == 1
    assert len(pool.pids) == 2 and set(pool.pids) != before
    assert await pool.run(pow, 2, 10) == 1024


async def test_an_idle_worker_killed_from_outside_is_replaced(pool):
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(100):
        if pool.replaced:
            break
        await asyncio.sleep(0.05)
    assert pool.replaced == 1 and victim not in pool.pids
    assert await asyncio.gather(*(pool.run(abs, -i) for i in range(6))) == list(range(6))


async def test_a_cancelled_job_does_not_disturb_the_next(pool):
    slow = asyncio.create_task(pool.run(time.sleep, 0.3))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await asyncio.gather(*(pool.run(len, "x" * i) for i in range(4))) == [0, 1, 2, 3]


async def test_a_worker_still_on_an_abandoned_job_is_stopped_and_replaced():
    pool = ProcessPool(1, abandoned_after_s=0.2)
    await pool.start()
    try:
        (stuck,) = pool.pids
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.run(time.sleep, 60), 0.1)
        assert await asyncio.wait_for(pool.run(pow, 2, 5), 10) == 32  # answered by its replacement
        assert pool.replaced == 1 and pool.pids != [stuck]
    finally:
        await pool.close()


async def test_an_abandoned_job_that_ends_in_time_keeps_its_worker():
    pool = ProcessPool(1, abandoned_after_s=1.0)
    await pool.start()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.run(time.sleep, 0.3), 0.1)
        await asyncio.sleep(1.2)
        assert pool.replaced == 0
        assert await pool.run(pow, 3, 3) == 27
    finally:
        await pool.close()


async def test_workers_ignore_the_signals_the_bot_handles(pool):
    # SIGINT from a terminal reaches the whole process group; the bot finishes photos, then closes us.
    for pid in pool.pids:
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    assert await pool.run(time.sleep, 0.2) is None
    assert pool.replaced == 0


async def test_close_ends_the_processes_and_fails_later_calls():
    pool = ProcessPool(1)
    await pool.start()
    (pid,) = pool.pids
    await pool.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(WorkerLost):
        await pool.run(abs, -1)


async def test_workers_import_the_preload_before_they_count_as_started():
    """So no user's photo pays for the imports (~150 ms here): they happen while the bot starts."""
    imported = "'xml.dom.minidom' in __import__('sys').modules"  # a module a bare worker lacks
    bare, preloaded = ProcessPool(1), ProcessPool(1, preload=("xml.dom.minidom",))
    for pool in (bare, preloaded):
        await pool.start()
    try:
        assert await bare.run(eval, imported) is False
        assert await preloaded.run(eval, imported) is True
    finally:
        for pool in (bare, preloaded):
            await pool.close()


async def test_a_preload_that_cannot_be_imported_stops_the_start():
    pool = ProcessPool(2, preload=("photobot_has_no_such_module",))
    with pytest.raises(WorkerLost, match="could not start"):
        await pool.start()
    assert pool.pids == []


async def test_the_thread_pool_has_the_same_interface():
    pool = ThreadPool(2)
    await pool.start()
    try:
        assert await pool.run(pow, 3, 2) == 9
        with pytest.raises(ValueError):
            await pool.run(int, "x")
    finally:
        await pool.close()


async def test_a_file_handed_over_by_path_crosses_the_pipe_as_a_path_not_its_bytes(pool, tmp_path):
    data = os.urandom(3_000_000)
    path = tmp_path / "photo.part"
    path.write_bytes(data)
    before = pool.sent_bytes
    assert await pool.run(read_photo, path, 20_000_000) == data  # read in the worker, answered back
    by_path = pool.sent_bytes - before
    assert by_path < 1_000
    await pool.run(read_photo, data, 20_000_000)
    assert pool.sent_bytes - before - by_path > len(data)  # bytes themselves are pickled through


async def test_a_file_is_read_no_further_than_one_byte_past_the_limit(pool, tmp_path):
    path = tmp_path / "big.part"
    path.write_bytes(b"x" * 5000)
    assert await pool.run(read_photo, path, 100) == b"x" * 101
