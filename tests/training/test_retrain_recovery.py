"""No retrain job without a process blocks /retrain: a start that fails, a job killed while the bot was
down, a job process that died unwatched — each is marked failed, and the next /retrain starts a job. A
job whose process still runs when the bot restarts is taken over by the next bot process.

A real bot over HTTP against the local Bot API server (told to fail `sendMessage` for the outage),
real job processes, a real SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from bot.playground.bot_api_server import BotApiError
from bot.retrain_progress import progress_text
from bot.retraining import RetrainRunner
from inference.model_store import ModelStore
from photobot.settings import Settings
from photobot.wiring import retrain_config
from storage import Store
from storage.records import RetrainJob
from tests.support.bot import ADMIN_ID, BotHarness, start_bot, stop_bot
from tests.support.models import add_version, digit_meta
from tests.support.replicas import Replicas

pytestmark = pytest.mark.asyncio(loop_scope="module")
SMALL_JOB = ("--limit", "3000", "--test-limit", "2000", "--epochs", "1")
STARTED = re.compile(r"^Retraining digits \(job (\d+)\)\nStarting…$")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_digit_model) -> Path:
    """A store with the tiny digit model converted, as after its first start: every bot these tests
    start serves it at once, with no conversion process of its own."""
    folder = tmp_path_factory.mktemp("models")
    model_file = tiny_digit_model(tmp_path_factory.mktemp("tiny") / "tiny.keras", hidden=16, converted=True)
    add_version(ModelStore(folder), "digits", model_file, digit_meta(metrics={}, augmented=False))
    return folder


async def start_with_runner(data_dir: Path, model_dir: Path, mnist_path: Path) -> BotHarness:
    harness = await start_bot(data_dir, model_dir, datasets=(mnist_path.parent,), user_photos_per_minute=0)
    harness.application.bot_data["retraining"] = RetrainRunner(
        retrain_config(harness.settings), poll_s=0.2, nice=0
    )
    return harness


async def stop_with_runner(harness: BotHarness) -> None:
    await runner_of(harness).close(stop_jobs=True)
    await stop_bot(harness)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, mnist_path: Path):
    harness = await start_with_runner(tmp_path_factory.mktemp("data"), model_dir, mnist_path)
    yield harness
    await stop_with_runner(harness)


def runner_of(bot: BotHarness) -> RetrainRunner:
    return bot.application.bot_data["retraining"]


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def retrain_starts_a_job(bot: BotHarness) -> int:
    """/retrain, and the id of the job it started; the job is then stopped (not needed here) and its
    watcher let finish, so that nothing it sends mixes with the next test's messages."""
    reply = await bot.say(ADMIN_ID, "/retrain digits")
    started = STARTED.match(reply["text"])
    assert started, reply["text"]
    job_id = int(started.group(1))
    await stop_job(bot, job_id)
    return job_id


async def stop_job(bot: BotHarness, job_id: int) -> None:
    """Kill the job's process if it still runs, and wait for its watcher to be done with it."""
    runner = runner_of(bot)
    for _ in range(600):  # the progress message is sent just before the process is spawned
        job = await bot.services.store.get_retrain_job(job_id)
        if job_id in runner.running or not job.active:
            break
        await asyncio.sleep(0.05)
    running = runner.running.get(job_id)
    if running is not None:
        with contextlib.suppress(ProcessLookupError):
            running.process.kill()
        await runner.wait(job_id)
    assert not (await bot.services.store.get_retrain_job(job_id)).active


async def job_when(bot: BotHarness, job_id: int, status: str, timeout: float = 20.0) -> RetrainJob:
    job = None
    for _ in range(int(timeout / 0.05)):
        job = await bot.services.store.get_retrain_job(job_id)
        if job is not None and job.status == status:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} is {job.status}, not {status}: {job}")


async def test_a_start_message_that_cannot_be_sent_fails_the_job_and_the_next_retrain_starts(
    bot: BotHarness,
) -> None:
    bot.user(ADMIN_ID, "Root")
    latest = await bot.services.store.recent_retrain_jobs(limit=1)
    next_id = latest[0].id + 1 if latest else 1
    bot.server.failing_methods["sendMessage"] = BotApiError("Bad Gateway", 502)
    try:
        await bot.server.send_text(ADMIN_ID, "/retrain digits")
        failed = await job_when(bot, next_id, "failed")
    finally:
        del bot.server.failing_methods["sendMessage"]
    assert failed.error == "its start message could not be sent: Bad Gateway"
    assert failed.id not in runner_of(bot).running
    job_id = await retrain_starts_a_job(bot)
    assert job_id == failed.id + 1


async def test_a_job_process_that_cannot_be_spawned_fails_the_job(bot: BotHarness, tmp_path: Path) -> None:
    bot.user(ADMIN_ID, "Root")
    runner_of(bot).python = str(tmp_path / "no-such-python")
    try:
        after = bot.server.chat(ADMIN_ID).revision
        progress = await bot.say(ADMIN_ID, "/retrain digits")
        job_id = int(STARTED.match(progress["text"]).group(1))
        edit = await bot.server.wait_for(ADMIN_ID, lambda e: e["type"] == "edit", after=after)
    finally:
        runner_of(bot).python = sys.executable
    assert edit["message"]["text"].startswith("Retraining digits could not start: ")
    failed = await bot.services.store.get_retrain_job(job_id)
    assert failed.status == "failed" and failed.error.startswith("the job process could not start: ")
    assert await retrain_starts_a_job(bot) == job_id + 1


async def test_retrain_fails_a_job_whose_process_died_unwatched(bot: BotHarness) -> None:
    """A job started by `photobot retrain` on the command line, then killed (the OOM killer)."""
    bot.user(ADMIN_ID, "Root")
    store = bot.services.store
    orphan = await store.create_retrain_job("digits", requested_by=None)
    await store.start_retrain_job(orphan.id, pid=dead_pid())
    job_id = await retrain_starts_a_job(bot)
    assert job_id == orphan.id + 1
    failed = await store.get_retrain_job(orphan.id)
    assert failed.status == "failed" and "ended without finishing" in failed.error


async def test_a_job_the_retrain_runner_watches_is_not_taken_for_abandoned(bot: BotHarness) -> None:
    """Its process has not claimed it yet (still queued, no pid): a second /retrain, sent at the same
    time, is told it runs, and the job goes on."""
    bot.user(ADMIN_ID, "Root")
    after = bot.server.chat(ADMIN_ID).revision
    await bot.server.send_text(ADMIN_ID, "/retrain digits")
    await bot.server.send_text(ADMIN_ID, "/retrain digits")
    progress = await bot_says(bot, after, lambda text: bool(STARTED.match(text)))
    busy = await bot_says(bot, after, lambda text: text.startswith("A retraining job is already "))
    job_id = int(STARTED.match(progress).group(1))
    assert f"job {job_id} (digits)" in busy, busy  # not failed as abandoned, not a second job
    await stop_job(bot, job_id)


async def bot_says(bot: BotHarness, after: int, matches) -> str:
    event = await bot.server.wait_for(
        ADMIN_ID,
        lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"] and matches(e["message"]["text"]),
        after=after,
    )
    return event["message"]["text"]


@pytest.mark.parametrize("left", ["running", "queued"])
async def test_a_job_left_without_a_process_is_failed_when_the_bot_starts(
    tmp_path: Path, model_dir: Path, mnist_path: Path, left: str
) -> None:
    """Killed while the bot was down (a dead pid), or never started (the bot stopped first)."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    store = await Store.open(settings.database_path, settings.images_dir)
    try:
        job = await store.create_retrain_job("digits", requested_by=ADMIN_ID, chat_id=ADMIN_ID)
        if left == "running":
            await store.start_retrain_job(job.id, pid=dead_pid())
    finally:
        await store.close()
    harness = await start_with_runner(data_dir, model_dir, mnist_path)
    try:
        failed = await harness.services.store.get_retrain_job(job.id)
        harness.user(ADMIN_ID, "Root")
        assert await retrain_starts_a_job(harness) == job.id + 1
    finally:
        await stop_with_runner(harness)
    assert failed.status == "failed"
    expected = "never started" if left == "queued" else "ended without finishing"
    assert expected in failed.error, failed.error


async def replicas_that_retrain(tmp_path: Path, model_dir: Path, mnist_path: Path) -> Replicas:
    """Bot processes on one machine and database, the first running, its retraining jobs small fits."""
    replicas = await Replicas.start(
        tmp_path / "data", model_dir, running=(0,), datasets=(mnist_path.parent,), user_photos_per_minute=0
    )
    replicas.bot(0).application.bot_data["retraining"] = RetrainRunner(
        retrain_config(replicas.settings), extra_args=SMALL_JOB, poll_s=0.2, nice=0
    )
    return replicas


@pytest.mark.process
async def test_a_restarted_bot_takes_over_the_job_the_last_one_left_running(
    tmp_path: Path, model_dir: Path, mnist_path: Path
) -> None:
    """The job goes on while the bot restarts (paused meanwhile, so that it cannot end unwatched): the
    next bot process on the machine edits the same progress message, in the admin's language, and
    sends the report."""
    replicas = await replicas_that_retrain(tmp_path, model_dir, mnist_path)
    try:
        first = replicas.to(0)
        admin = first.user(ADMIN_ID, "Рут", language_code="ru")
        progress = await first.say(admin, "/retrain digits force")  # a real fit: seconds, not a skip
        job_id = int(re.search(r"\(задача (\d+)\)", progress["text"]).group(1))
        job = await job_when(first, job_id, "running")
        os.kill(job.pid, signal.SIGSTOP)
        try:
            await replicas.stop_replica(0)  # the job goes on; the bot lets go of it
            mark = replicas.server.chat(admin).revision
            await replicas.start_replica(1)  # a watch let go of is taken over at once
        finally:
            os.kill(job.pid, signal.SIGCONT)
        second = replicas.bot(1)
        runner: RetrainRunner = second.application.bot_data["retraining"]
        assert job_id in runner.running  # taken over as the bot started
        await runner.wait(job_id)
        done = await second.services.store.get_retrain_job(job_id)
        assert done.status in ("succeeded", "rejected") and done.watcher == runner.watcher, done
        events = replicas.server.chat(admin).events[mark:]
        edits = [e["message"]["text"] for e in events if e["type"] == "edit"]
        assert edits[-1] == progress_text(done, language="ru"), edits  # the same message, to its end
        assert all(
            e["message"]["message_id"] == progress["message_id"] for e in events if e["type"] == "edit"
        )
        sent = [e["message"] for e in events if e["type"] == "message" and e["message"]["from"]["is_bot"]]
        texts = [message["text"] for message in sent if "text" in message]  # then the report's pictures
        assert len(texts) == 1 and texts[0].startswith(f"Retraining digits (job {job_id})\n"), texts
    finally:
        await replicas.stop()


@pytest.mark.process
async def test_a_job_that_ended_while_no_bot_ran_is_reported_at_the_next_start(
    tmp_path: Path, model_dir: Path, mnist_path: Path
) -> None:
    """The bot stops while its job runs; the job ends before any bot starts again. The next bot process
    on the machine finishes the progress message and sends the report, once: a third start sends
    nothing."""
    replicas = await replicas_that_retrain(tmp_path, model_dir, mnist_path)
    try:
        first = replicas.to(0)
        admin = first.user(ADMIN_ID, "Root")
        progress = await first.say(admin, "/retrain digits force")  # a real fit: seconds, not a skip
        job_id = int(re.search(r"\(job (\d+)\)", progress["text"]).group(1))
        await job_when(first, job_id, "running")
        await replicas.stop_replica(0)  # the job goes on; the bot lets go of it
        store = await Store.open(replicas.settings.database_path, replicas.settings.images_dir)
        try:
            for _ in range(1200):  # the job ends with no bot running
                done = await store.get_retrain_job(job_id)
                if not done.active:
                    break
                await asyncio.sleep(0.1)
        finally:
            await store.close()
        assert done.status in ("succeeded", "rejected"), done
        mark = replicas.server.chat(admin).revision
        await replicas.start_replica(1)
        reported = await replicas.server.wait_for(
            admin,
            lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"] and "text" in e["message"],
            after=mark,
            timeout=30,
        )
        assert reported["message"]["text"].startswith(f"Retraining digits (job {job_id})\n"), reported
        edits = [e["message"] for e in replicas.server.chat(admin).events[mark:] if e["type"] == "edit"]
        assert edits and edits[0]["message_id"] == progress["message_id"]
        assert edits[0]["text"] == progress_text(done, language="en")
        await replicas.stop_replica(1)
        mark = replicas.server.chat(admin).revision
        await replicas.start_replica(1)
        assert await replicas.bot(1).quiet_for(admin, 2.0) == []  # reported once
    finally:
        await replicas.stop()
