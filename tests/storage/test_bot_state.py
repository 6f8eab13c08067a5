"""What the bot keeps between updates, in the database: per-user flood windows, change counters, and who
shows a retraining job's progress.

Several bot processes may share one database; these tests open two stores on one database, as two
processes do, on both backends (the `database` fixture).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from storage import Store, SyncStore
from storage.records import new_watcher
from storage.store_models import SILENT_S
from storage.taught import CHANGES, TaughtLabel
from tests.support.storage import execute


async def test_a_users_updates_count_in_one_window_until_it_closes(database, tmp_path: Path) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        counted = [await store.count_update(7, "updates", now=100.0 + i, window_s=60) for i in range(3)]
        assert [(w.start, w.count) for w in counted] == [(100.0, 1), (100.0, 2), (100.0, 3)]
        other = await store.count_update(7, "photos", now=102.5, window_s=60)
        assert (other.start, other.count) == (102.5, 1)  # each limit counts on its own
        late = await store.count_update(7, "updates", now=159.9, window_s=60)
        assert (late.start, late.count) == (100.0, 4)
        reopened = await store.count_update(7, "updates", now=160.0, window_s=60)
        assert (reopened.start, reopened.count) == (160.0, 1)  # the old window closed at 160


async def test_two_stores_on_one_database_count_one_window_together(database, tmp_path: Path) -> None:
    first = await Store.open(database, tmp_path / "images")
    second = await Store.open(database, tmp_path / "images")
    try:
        windows = await asyncio.gather(
            *(store.count_update(42, "updates", now=1000.0, window_s=60) for store in [first, second] * 25)
        )
    finally:
        await first.close()
        await second.close()
    assert sorted(window.count for window in windows) == list(range(1, 51))  # none lost, none twice


async def test_closed_windows_are_swept_so_the_table_does_not_grow(database, tmp_path: Path) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        for user in range(100):
            await store.count_update(user, "updates", now=1000.0 + user / 10, window_s=60)
        assert await store.flood_windows() == 100
        await store.count_update(5000, "photos", now=1065.05, window_s=60)  # users 0-50's windows closed
        assert await store.flood_windows() == 50  # users 51-99's, and the new one


async def test_every_change_to_the_taught_models_raises_their_change_counter(
    database, tmp_path: Path
) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        assert await store.change_version(CHANGES) == 0
        await store.create_taught_model("pets", [TaughtLabel("dog"), TaughtLabel("cat")], 7)
        assert await store.change_version(CHANGES) == 1
        await store.set_taught_labels("pets", [TaughtLabel("dog"), TaughtLabel("cat"), TaughtLabel("fox")])
        assert await store.delete_taught_model("pets") is True
        assert await store.change_version(CHANGES) == 3
        assert await store.delete_taught_model("pets") is False  # nothing changed
        assert await store.change_version(CHANGES) == 3
    with SyncStore(database, tmp_path / "images") as sync:  # the command line's changes count too
        sync.create_taught_model("insects", [TaughtLabel("ant"), TaughtLabel("bee")])
    async with await Store.open(database, tmp_path / "images") as store:
        assert await store.change_version(CHANGES) == 4


async def test_a_job_another_bot_process_watches_is_not_failed_as_abandoned(database, tmp_path: Path) -> None:
    """Queued by one bot process (no pid yet): a second one's recovery leaves it alone while it is
    watched, and fails it once its watcher let go and no process claimed it."""
    first, second = new_watcher(), new_watcher()
    async with await Store.open(database, tmp_path / "images") as store:
        job = await store.create_retrain_job("digits", chat_id=5, language="ru", watcher=first)
        await store.set_retrain_message(job.id, 77)
        shown = await store.get_retrain_job(job.id)
        assert (shown.message_id, shown.language, shown.watcher) == (77, "ru", first)
        assert await store.fail_abandoned_jobs() == []  # another process's recovery, or its start
        assert await store.watch_retrain_job(job.id, second, take_over=True) is False  # first watches
        await store.unwatch_retrain_jobs([job.id], first)  # the first bot stops
        assert await store.fail_abandoned_jobs() == [job.id]
        assert "never started" in (await store.get_retrain_job(job.id)).error


async def test_a_job_whose_watcher_let_go_is_taken_over_by_one_bot_process(database, tmp_path: Path) -> None:
    first, second, third = new_watcher(), new_watcher(), new_watcher()
    async with await Store.open(database, tmp_path / "images") as store:
        job = await store.create_retrain_job("digits", chat_id=5, watcher=first)
        await store.start_retrain_job(job.id, pid=os.getpid())  # a live process on this machine
        await store.unwatch_retrain_jobs([job.id], first)
        assert await store.fail_abandoned_jobs() == []  # its process runs: taken over, not failed
        taken = await asyncio.gather(
            store.watch_retrain_job(job.id, second, take_over=True),
            store.watch_retrain_job(job.id, third, take_over=True),
        )
        assert sorted(taken) == [False, True]
        assert (await store.get_retrain_job(job.id)).watcher == (second if taken[0] else third)


async def test_a_job_of_another_machine_is_failed_only_once_unwatched_and_silent(
    database, tmp_path: Path
) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        job = await store.create_retrain_job("digits", chat_id=5, watcher="elsewhere/4242/abcdef")
        await store.start_retrain_job(job.id, pid=4242)  # no such process here: it runs on "elsewhere"
        await store.unwatch_retrain_jobs([job.id], "elsewhere/4242/abcdef")
        assert await store.fail_abandoned_jobs() == []  # it wrote its progress just now
        execute(
            database,
            "UPDATE retrain_jobs SET updated_at = updated_at - ? WHERE id = ?",
            (SILENT_S + 1, job.id),
        )
        assert await store.fail_abandoned_jobs() == [job.id]
        assert "on elsewhere" in (await store.get_retrain_job(job.id)).error


async def test_a_job_that_ended_unwatched_is_reported_by_one_bot_process(database, tmp_path: Path) -> None:
    first, second, third = new_watcher(), new_watcher(), new_watcher()
    async with await Store.open(database, tmp_path / "images") as store:
        watched = await store.create_retrain_job("flowers", chat_id=5, watcher=first)
        await store.set_retrain_message(watched.id, 76)
        assert await store.fail_retrain_job(watched.id, "the job process could not start")
        await store.mark_retrain_reported(watched.id)  # reported as usual, by the bot that watched it
        job = await store.create_retrain_job("digits", chat_id=5, watcher=first)
        await store.set_retrain_message(job.id, 77)
        await store.start_retrain_job(job.id, pid=os.getpid())
        assert await store.unreported_retrain_jobs(3600) == []  # still running
        await store.unwatch_retrain_jobs([job.id], first)  # the bot stops; the job goes on and ends
        assert await store.fail_retrain_job(job.id, "stopped by signal SIGTERM")
        assert [j.id for j in await store.unreported_retrain_jobs(3600)] == [job.id]
        claimed = await asyncio.gather(
            store.claim_retrain_report(job.id, second), store.claim_retrain_report(job.id, third)
        )
        assert sorted(claimed) == [False, True]
        await store.mark_retrain_reported(job.id)
        assert await store.unreported_retrain_jobs(3600) == []  # reported once
        assert not await store.claim_retrain_report(job.id, third)


async def test_the_report_of_a_job_whose_watcher_died_is_claimed_from_that_watcher_only(
    database, tmp_path: Path
) -> None:
    """A bot process killed while it watched a job never lets go of it: the next one on its machine
    claims the report from that dead watcher by name; a watcher that lives keeps it."""
    dead, alive, next_bot = new_watcher(), new_watcher(), new_watcher()
    async with await Store.open(database, tmp_path / "images") as store:
        job = await store.create_retrain_job("digits", chat_id=5, watcher=dead)
        await store.set_retrain_message(job.id, 78)
        assert await store.fail_retrain_job(job.id, "the job process was killed by SIGKILL")
        assert [j.id for j in await store.unreported_retrain_jobs(3600)] == [job.id]
        assert not await store.claim_retrain_report(job.id, next_bot)  # watched: not without a name
        assert not await store.claim_retrain_report(job.id, next_bot, from_dead=alive)
        assert await store.claim_retrain_report(job.id, next_bot, from_dead=dead)
        await store.mark_retrain_reported(job.id)
        assert await store.unreported_retrain_jobs(3600) == []
