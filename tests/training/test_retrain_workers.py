"""Retraining on `photobot worker` processes (RETRAIN_WORKERS=external), on SQLite and PostgreSQL.

A real bot over HTTP against the local Bot API server queues the job on /retrain; a real `photobot
worker` process claims it, runs the job process, edits the admin's progress message and sends the
report; the bot then serves the promoted version. A worker SIGKILLed mid-job takes its job's process
with it, and the next worker, once the lease has run out, fails the job with why and tells the admin;
SIGTERM to a worker stops its job, tells the admin and ends the worker.
On PostgreSQL the worker has a DATA_DIR of its own: models and photos reach it through the database.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.model_store import ModelStore
from storage.dialect import Database, is_postgres_url
from storage.model_registry import registry_for
from storage.records import RetrainJob
from tests.support.bot import ADMIN_ID, TOKEN, BotHarness, start_bot, stop_bot
from tests.support.models import add_version, digit_meta
from tests.support.retrain import ONE_PERSON, ONE_PERSON_ENV, digit_photos

# Each test fits real models in real job processes started by real worker processes.
pytestmark = pytest.mark.slow
SMALL_JOB = ("--limit", "3000", "--test-limit", "2000", "--epochs", "1")
LONG_JOB = ("--limit", "10000", "--test-limit", "500", "--epochs", "50")  # killed midway
MARGIN = 1.5  # the tiny serving MLP moves by tenths of a point: see tests/training/test_retrain_bot.py
QUEUED = "Retraining digits (job {job})\nQueued: waiting for a worker to take it…"
REPORT = re.compile(r"^Retraining digits \(job (\d+)\)\n(PROMOTED|REJECTED|Nothing done)")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, tiny_digit_model) -> Path:
    return tiny_digit_model(tmp_path_factory.mktemp("model") / "tiny.keras", hidden=32)


async def start_cluster(tmp_path: Path, database: Database, model_file: Path, mnist_path: Path) -> BotHarness:
    """The bot with RETRAIN_WORKERS=external, serving the tiny digit model as v1 from `database`'s store."""
    models = tmp_path / "models"
    registry = registry_for(database)
    # With PostgreSQL the version is registered in the database (the bot's folder is only its cache).
    add_version(
        ModelStore(models, registry=registry), "digits", model_file, digit_meta(metrics={}, augmented=False)
    )
    if registry is not None:
        registry.close()
        models = tmp_path / "nothing-local"
        models.mkdir()
    return await start_bot(
        tmp_path / "bot",
        models,
        database_url=str(database) if is_postgres_url(database) else None,
        datasets=(mnist_path.parent,),
        user_photos_per_minute=0,
        user_updates_per_minute=0,
        retrain_workers="external",
        retrain_min_new_labels=10,
        retrain_gate_margin=MARGIN,
        **ONE_PERSON,
    )


def worker_dir(bot: BotHarness, tmp_path: Path, name: str) -> Path:
    """A worker's DATA_DIR: its own with PostgreSQL; with SQLite, the bot's (the database is a file in it)."""
    return tmp_path / name if bot.settings.database_url else bot.settings.data_dir


async def start_worker(
    bot: BotHarness, data_dir: Path, *args: str, log: Path, **env: str
) -> asyncio.subprocess.Process:
    """`photobot worker` as an operator starts it: the bots' token, Bot API and database, its DATA_DIR."""
    environment = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": bot.server.url,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": bot.settings.database_url or "",
        "PHOTOBOT_DATASETS": os.pathsep.join(str(p) for p in bot.settings.datasets),
        "RETRAIN_MIN_NEW_LABELS": "10",
        "RETRAIN_GATE_MARGIN": str(MARGIN),
        "RETRAIN_LEASE_S": "60",
        **ONE_PERSON_ENV,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LOG_LEVEL": "INFO",
        **env,
    }
    output = open(log, "ab")  # noqa: SIM115 - the process holds it; closed with the test's files
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "photobot",
        "worker",
        *args,
        env=environment,
        cwd=data_dir.parent,
        stdout=output,
        stderr=output,
    )


async def until(condition, timeout: float, what: str):
    for _ in range(int(timeout / 0.1)):
        found = await condition()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def job_of(bot: BotHarness, job_id: int) -> RetrainJob:
    job = await bot.services.store.get_retrain_job(job_id)
    assert job is not None
    return job


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def edits_of(bot: BotHarness, message_id: int) -> list[str]:
    return [
        e["message"]["text"]
        for e in bot.server.chat(ADMIN_ID).events
        if e["type"] == "edit" and e["message"]["message_id"] == message_id
    ]


def bot_texts(bot: BotHarness, after: int) -> list[str]:
    return [
        e["message"].get("text", "")
        for e in bot.server.chat(ADMIN_ID).events[after:]
        if e["type"] == "message" and e["message"]["from"]["is_bot"]
    ]


async def test_a_worker_process_runs_the_queued_job_shows_it_and_the_bot_serves_the_promoted_version(
    tmp_path: Path, database: Database, model_file: Path, mnist_path: Path
) -> None:
    bot = await start_cluster(tmp_path, database, model_file, mnist_path)
    try:
        admin, user = bot.user(ADMIN_ID, "Root"), bot.user(301, "Mira")
        photos = digit_photos(mnist_path, 60, seed=1, transform=np.fliplr)  # mirror-written digits
        for data, label in photos:  # labelled in chat, as people do it
            await bot.photo(user, data, label)
        start = bot.server.chat(admin).revision
        progress = await bot.say(admin, "/retrain digits")
        assert progress["text"] == QUEUED.format(job=1)
        assert (await job_of(bot, 1)).status == "queued"  # the bot only queues it

        where = worker_dir(bot, tmp_path, "worker")
        worker = await start_worker(bot, where, "--once", *SMALL_JOB, log=tmp_path / "worker.log")
        assert await asyncio.wait_for(worker.wait(), 600) == 0, (tmp_path / "worker.log").read_text()

        job = await job_of(bot, 1)
        assert (job.status, job.decision, job.candidate_version) == ("succeeded", "promote", 2)
        host, pid, _ = job.worker.split("/")
        assert (host, int(pid), job.runner) == (socket.gethostname(), worker.pid, "worker")
        texts = bot_texts(bot, start)
        report = next(t for t in texts if REPORT.match(t))
        assert "PROMOTED: v2 now serves (was v1)." in report and report.endswith("Serving now: digits v2."), (
            report
        )
        edits = edits_of(bot, progress["message_id"])
        assert any("Stage: " in t and re.search(r"[█░]{20} \d+%", t) for t in edits), edits
        assert (
            edits[-1] == "Retraining digits (job 1)\n████████████████████ 100%\nFinished: done — v2 promoted"
        )
        pictures = [
            e
            for e in bot.server.chat(admin).events[start:]
            if e["type"] == "message" and "photo" in e["message"]
        ]
        assert [p["message"].get("caption", "")[:18] for p in pictures][:2] == [
            "Confusion matrix o",
            "Training curves: l",
        ]
        if bot.settings.database_url:  # the report was written on the worker's machine, not the bot's
            assert (where / "reports" / "digits-job1" / "report.txt").is_file()
            assert not (bot.settings.data_dir / "reports").exists()

        classifier = bot.services.classifier  # follows the model pointer: no restart, no reload call
        await until(lambda: _served(classifier, 2), 60, "the bot to serve v2")
        await bot.photo(user, photos[0][0])
        latest = await bot.services.store.user_predictions(user, limit=1)
        assert (latest[0].model, latest[0].version) == ("digits", 2)
    finally:
        await stop_bot(bot)


async def _served(classifier, version: int) -> bool:
    return classifier.models()["digits"].version == version


async def test_a_worker_killed_mid_job_takes_the_job_with_it_and_the_next_worker_fails_it_and_says_why(
    tmp_path: Path, database: Database, model_file: Path, mnist_path: Path
) -> None:
    bot = await start_cluster(tmp_path, database, model_file, mnist_path)
    try:
        admin = bot.user(ADMIN_ID, "Root", language_code="ru")
        start = bot.server.chat(admin).revision
        progress = await bot.say(admin, "/retrain digits force")
        first = await start_worker(
            bot,
            worker_dir(bot, tmp_path, "first"),
            *LONG_JOB,
            log=tmp_path / "first.log",
            RETRAIN_LEASE_S="4",
        )

        async def training() -> RetrainJob | None:
            job = await job_of(bot, 1)
            assert first.returncode is None, (tmp_path / "first.log").read_text()
            return job if job.stage == "training" and job.pid else None

        job = await until(training, 300, "the job to be training")
        assert job.forced and job.worker.split("/")[1] == str(first.pid)
        first.kill()  # SIGKILL: nothing of the worker runs on, not even a handler
        await first.wait()
        await until(lambda: _gone(job.pid), 30, "the job's process to end with its worker")
        assert (await job_of(bot, 1)).status == "running"  # nobody has looked yet

        second = await start_worker(
            bot,
            worker_dir(bot, tmp_path, "second"),
            "--poll-s",
            "0.5",
            *LONG_JOB,
            log=tmp_path / "second.log",
        )
        try:
            failed = await until(lambda: _failed(bot, 1), 120, "the next worker to fail the job")
            assert failed.lease_expired and failed.error.startswith(
                f"its worker {job.worker} stopped renewing its lease (it ran out at "
            ), failed.error
            told = await until(lambda: _told(bot, start, 1), 30, "the admin to be told")
            assert told == (
                f"Дообучение digits (задача 1) не удалось: {failed.error}\nНичего не изменилось: работает v1."
            )
            assert edits_of(bot, progress["message_id"])[-1].endswith(f": {failed.error}")
            assert bot.services.model_store.active_version("digits") == 1

            # The next job is the second worker's; SIGTERM (systemctl stop) stops the job and the worker.
            mark = bot.server.chat(admin).revision
            await bot.server.send_text(admin, "/retrain digits force")
            running = await until(lambda: _training(bot, 2), 300, "job 2 to be training")
            assert running.worker.split("/")[1] == str(second.pid)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 60) == 0, (tmp_path / "second.log").read_text()
            stopped = await job_of(bot, 2)
            assert (stopped.status, stopped.error, stopped.lease_expired) == (
                "failed",
                "stopped by signal SIGTERM",
                False,
            )
            assert not alive(running.pid)
            told = await until(lambda: _told(bot, mark, 2), 30, "the admin to be told of job 2")
            assert told.startswith("Дообучение digits (задача 2) не удалось: stopped by signal SIGTERM\n")
        finally:
            if second.returncode is None:
                second.kill()
    finally:
        await stop_bot(bot)


async def _gone(pid: int) -> bool:
    return not alive(pid)


async def _failed(bot: BotHarness, job_id: int) -> RetrainJob | None:
    job = await job_of(bot, job_id)
    return job if job.status == "failed" else None


async def _told(bot: BotHarness, after: int, job_id: int) -> str | None:
    return next((t for t in bot_texts(bot, after) if f"(задача {job_id}) не удалось" in t), None)


async def _training(bot: BotHarness, job_id: int) -> RetrainJob | None:
    job = await bot.services.store.get_retrain_job(job_id)
    return job if job is not None and job.stage == "training" and job.pid else None
