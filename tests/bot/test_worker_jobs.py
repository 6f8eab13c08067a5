"""With RETRAIN_WORKERS=external the bot only queues /retrain's job, and a job whose worker died is failed,
with why, by the next bot to start and before the next /retrain — never left running. On SQLite and
PostgreSQL.

Real bot processes' worth of Applications behind one webhook (tests/support/replicas.py), the real
storage; the worker that claimed the job and died is a real claim made through a store of its own, whose
lease then runs out (a worker running jobs end to end: tests/training/test_retrain_workers.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.dialect import Database, is_postgres_url
from tests.support.bot import ADMIN_ID, BotHarness, start_bot, stop_bot
from tests.support.replicas import Replicas
from tests.support.storage import open_store

QUEUED = "Retraining digits (job {job})\nQueued: waiting for a worker to take it…"
DEAD_WORKER = "gpu7/4242/ab"


async def claimed_by_a_worker_that_died(tmp_path: Path, database: Database, job_id: int) -> None:
    """A worker claims the queued job for 10 ms and is never heard of again."""
    store = await open_store(tmp_path / "dead-worker", database)
    try:
        job = await store.claim_retrain_job(DEAD_WORKER, lease_s=0.01)
        assert job is not None and job.id == job_id
        await asyncio.sleep(0.05)  # its lease runs out
    finally:
        await store.close()


def edits_of(bot: BotHarness, message_id: int) -> list[str]:
    return [
        e["message"]["text"]
        for e in bot.server.chat(ADMIN_ID).events
        if e["type"] == "edit" and e["message"]["message_id"] == message_id
    ]


def sent_after(bot: BotHarness, after: int) -> list[str]:
    return [
        e["message"]["text"]
        for e in bot.server.chat(ADMIN_ID).events[after:]
        if e["type"] == "message" and e["message"]["from"]["is_bot"]
    ]


async def test_the_bot_queues_and_a_dead_workers_job_is_failed_at_the_next_start_and_the_next_retrain(
    tmp_path: Path, model_dir: Path, database: Database
) -> None:
    replicas = await Replicas.start(
        tmp_path / "data",
        model_dir,
        running=(0,),
        retrain_workers="external",
        database_url=str(database) if is_postgres_url(database) else None,
    )
    try:
        first = replicas.to(0)
        admin = first.user(ADMIN_ID, "Root")
        progress = await first.say(admin, "/retrain digits")
        assert progress["text"] == QUEUED.format(job=1)
        busy = await first.say(admin, "/retrain digits force")  # one job per model, queued ones too
        assert busy["text"].startswith("A retraining job is already queued: job 1 (digits)"), busy["text"]
        queued = await first.services.store.get_retrain_job(1)
        assert (queued.status, queued.runner, queued.pid, queued.message_id) == (
            "queued",
            "worker",
            None,
            progress["message_id"],
        )
        await asyncio.sleep(0.3)  # nothing starts it in the bot's process
        assert (await first.services.store.get_retrain_job(1)).status == "queued"

        await claimed_by_a_worker_that_died(tmp_path, replicas.settings.database, 1)
        await replicas.stop_replica(0)
        mark = replicas.server.chat(admin).revision
        await replicas.start_replica(1)  # it looks at the leases as it starts
        second = replicas.to(1)
        failed = await second.services.store.get_retrain_job(1)
        assert failed.status == "failed" and failed.lease_expired, failed
        assert failed.error.startswith(f"its worker {DEAD_WORKER} stopped renewing its lease"), failed.error
        serving = second.services.model_store.active_version("digits")
        assert (
            edits_of(second, progress["message_id"])[-1]
            == f"Retraining digits (job 1)\nFailed: {failed.error}"
        )
        assert sent_after(second, mark) == [
            f"Retraining digits (job 1) failed: {failed.error}\nNothing changed: v{serving} keeps serving."
        ]

        again = await second.say(admin, "/retrain digits")
        assert again["text"] == QUEUED.format(job=2)
        await claimed_by_a_worker_that_died(tmp_path, replicas.settings.database, 2)
        mark = replicas.server.chat(admin).revision
        await replicas.server.send_text(
            admin, "/retrain digits"
        )  # the dead worker's job is in the way no more
        await replicas.server.wait_for(
            admin,
            lambda e: e["type"] == "message" and e["message"].get("text") == QUEUED.format(job=3),
            after=mark,
        )
        texts = sent_after(second, mark)
        assert texts[0].startswith("Retraining digits (job 2) failed: its worker gpu7/4242/ab"), texts
        assert texts[1:] == [QUEUED.format(job=3)]
    finally:
        await replicas.stop()


async def test_a_job_stopped_by_its_worker_that_dies_of_another_signal_is_failed_as_stopped(
    tmp_path: Path,
) -> None:
    """The job's SIGTERM becomes a SystemExit inside it; raised in a Keras fit it can end in TensorFlow's
    teardown as SIGABRT before the job records why. A stand-in for the job's process does just that:
    the job still says it was stopped, not that it was killed."""
    from bot.config import WorkerConfig
    from bot.retrain_workers import RetrainWorker
    from inference.model_store import ModelStore

    job_process = tmp_path / "job.sh"  # `python -m photobot retrain …` that aborts when stopped
    job_process.write_text("#!/bin/sh\ntrap 'kill -ABRT $$' TERM\nwhile :; do sleep 0.05; done\n")
    job_process.chmod(0o755)
    store = await open_store(tmp_path)
    try:
        queued = await store.create_retrain_job("digits", runner="worker")
        config = WorkerConfig(data_dir=tmp_path / "worker", poll_s=0.1, python=str(job_process))
        worker = RetrainWorker(config, store, bot=None, models=ModelStore(tmp_path / "models"))  # type: ignore[arg-type]
        running = asyncio.create_task(worker.run(once=True))
        await asyncio.sleep(1.0)  # claimed, its process started
        assert (await store.get_retrain_job(queued.id)).status in ("claimed", "running")
        worker.stop()
        assert await asyncio.wait_for(running, 30) == 1
        job = await store.get_retrain_job(queued.id)
        assert (job.status, job.error) == ("failed", "stopped by signal SIGTERM")
    finally:
        await store.close()


async def test_a_worker_tells_only_a_current_admin_of_its_jobs_end(tmp_path: Path, model_dir: Path) -> None:
    """A report shows people's photos: a worker whose ADMIN_IDS no longer holds the admin who asked
    finishes the progress message and tells nobody more; one that holds them tells them."""
    from bot.config import WorkerConfig
    from bot.retrain_workers import RetrainWorker

    job_process = tmp_path / "job.sh"  # a job that fails at once: its worker reports the failure
    job_process.write_text("#!/bin/sh\nexit 3\n")
    job_process.chmod(0o755)
    bot = await start_bot(tmp_path / "bot", model_dir, retrain_workers="external")
    try:
        admin = bot.user(ADMIN_ID, "Root")
        told = []
        for admins in (frozenset({ADMIN_ID + 1}), frozenset({ADMIN_ID})):
            progress = await bot.say(admin, "/retrain digits")
            mark = bot.server.chat(admin).revision
            config = WorkerConfig(
                data_dir=tmp_path / "worker", poll_s=0.1, python=str(job_process), admin_ids=admins
            )
            worker = RetrainWorker(config, bot.services.store, bot.application.bot, bot.services.model_store)
            assert await asyncio.wait_for(worker.run(once=True), 60) == 1
            assert edits_of(bot, progress["message_id"])[-1].startswith("Retraining digits (job ")
            assert "\nFailed: the job process exited with code 3" in edits_of(bot, progress["message_id"])[-1]
            told.append(sent_after(bot, mark))
        serving = bot.services.model_store.active_version("digits")
        assert told == [
            [],
            [
                "Retraining digits (job 2) failed: the job process exited with code 3 before finishing\n"
                f"Nothing changed: v{serving} keeps serving."
            ],
        ]
    finally:
        await stop_bot(bot)
