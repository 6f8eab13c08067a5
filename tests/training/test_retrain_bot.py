"""/retrain end to end: a real bot over HTTP against the local Bot API server, a real job process.

People label photos in chat (captions), an admin sends /retrain, the job runs as its own process
(`photobot retrain … --job-id N`) on a small MNIST subset, the bot edits one progress message, sends
the report and its pictures, and hot-swaps to the promoted version; a poisoned batch is rejected; a
second /retrain is told which job runs; a job killed midway leaves the serving version untouched; an
admin rolls back; anyone else is refused.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bot.retraining import RetrainRunner
from inference.model_store import ModelStore
from photobot.wiring import retrain_config
from tests.support.bot import ADMIN_ID, BotHarness, button_data, start_bot, stop_bot
from tests.support.models import add_version, digit_meta
from tests.support.retrain import ONE_PERSON, digit_photos

# One story on one bot (train, reject, kill, roll back): its jobs fit real models, so all of it is slow.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
SMALL_JOB = ("--limit", "3000", "--test-limit", "2000", "--epochs", "1")
# The serving model here is a tiny MLP (86% on MNIST) whose score moves by tenths of a point with any
# further training; the gate's margin is a setting, widened here so the promotion path is what is tested.
MARGIN = 1.5
REPORT = re.compile(r"^Retraining digits \(job (\d+)\)\n(PROMOTED|REJECTED|Nothing done)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_digit_model) -> Path:
    folder = tmp_path_factory.mktemp("models")
    model_file = tiny_digit_model(folder / "tiny.keras", hidden=32)
    add_version(ModelStore(folder), "digits", model_file, digit_meta(metrics={}, augmented=False))
    model_file.unlink()
    return folder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, mnist_path: Path):
    harness = await start_bot(
        tmp_path_factory.mktemp("data"),
        model_dir,
        datasets=(mnist_path.parent,),
        user_photos_per_minute=0,
        user_updates_per_minute=0,
        retrain_min_new_labels=10,
        retrain_gate_margin=MARGIN,
        **ONE_PERSON,  # Mira alone teaches v2; the fairness rules have their own tests
    )
    runner = RetrainRunner(retrain_config(harness.settings), extra_args=SMALL_JOB, poll_s=0.2, nice=0)
    harness.application.bot_data["retraining"] = runner
    yield harness
    await runner.close(stop_jobs=True)
    await stop_bot(harness)


def runner_of(bot: BotHarness) -> RetrainRunner:
    return bot.application.bot_data["retraining"]


async def send_labelled(
    bot: BotHarness, user: int, photos: list[tuple[bytes, str]], wrong: bool = False
) -> None:
    """Photos with their label as the caption (a labelled example), as people send them."""
    for data, label in photos:
        caption = str((int(label) + 1) % 10) if wrong else label
        await bot.photo(user, data, caption)


async def report_of(bot: BotHarness, after: int, timeout: float = 240.0) -> dict:
    event = await bot.server.wait_for(
        ADMIN_ID,
        lambda e: (
            e["type"] == "message"
            and e["message"]["from"]["is_bot"]
            and bool(REPORT.match(e["message"].get("text", "")))
        ),
        after=after,
        timeout=timeout,
    )
    runner = runner_of(bot)
    for job_id in list(runner.running):  # the report's pictures come next: let them all arrive
        await runner.wait(job_id)
    return event["message"]


def edits_of(bot: BotHarness, message_id: int) -> list[str]:
    return [
        e["message"]["text"]
        for e in bot.server.chat(ADMIN_ID).events
        if e["type"] == "edit" and e["message"]["message_id"] == message_id
    ]


async def photos_after(bot: BotHarness, after: int, count: int, timeout: float = 30.0) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [
            e["message"]
            for e in bot.server.chat(ADMIN_ID).events[after:]
            if e["type"] == "message" and "photo" in e["message"]
        ]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_too_few_new_labels_explains_and_changes_nothing(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    before = bot.services.model_store.active_version("digits")
    start = bot.server.chat(admin).revision
    progress = await bot.say(admin, "/retrain digits")
    assert progress["text"].startswith("Retraining digits (job 1)")
    report = await report_of(bot, start)
    assert (
        "Nothing done: no photos have been labelled in chat yet; retraining needs at "
        "least 10. To retrain anyway: /retrain digits force" in report["text"]
    )
    assert bot.services.model_store.active_version("digits") == before
    job = await bot.services.store.get_retrain_job(1)
    assert (job.status, job.decision) == ("succeeded", "skipped")
    assert edits_of(bot, progress["message_id"])[-1].endswith("Finished: nothing to do")


async def test_labelled_photos_retrain_promote_and_the_bot_answers_with_the_new_version(
    bot: BotHarness, mnist_path: Path
) -> None:
    admin, user = bot.user(ADMIN_ID, "Root"), bot.user(301, "Mira")
    photos = digit_photos(mnist_path, 60, seed=1, transform=np.fliplr)  # mirror-written digits
    await send_labelled(bot, user, photos)
    serving = bot.services.model_store.active_version("digits")
    start = bot.server.chat(admin).revision
    progress = await bot.say(admin, "/retrain digits")
    assert progress["text"].startswith("Retraining digits (job 2)")
    report = await report_of(bot, start)
    text = report["text"]
    assert "PROMOTED: v2 now serves (was v1)." in text, text
    assert re.search(r"MNIST test \(2000\): \d+\.\d\d% → \d+\.\d\d%", text)
    assert re.search(r"held-out chat photos \(\d+\): \d+\.\d\d% → \d+\.\d\d%", text)
    assert re.search(r"from 1 person, most first: \d+\n", text) and "301:" not in text  # no user ids
    assert text.endswith("Serving now: digits v2.")
    edits = edits_of(bot, progress["message_id"])
    assert any("Stage: " in t and re.search(r"[█░]{20} \d+%", t) for t in edits), edits
    assert edits[-1].endswith("Finished: done — v2 promoted")
    pictures = await photos_after(bot, start, 2)
    assert [p.get("caption") for p in pictures][:2] == [
        "Confusion matrix on held-out chat photos: rows are the true labels, columns the answers",
        "Training curves: loss and accuracy per epoch",
    ]
    assert bot.services.model_store.active_version("digits") == 2 != serving
    assert bot.services.classifier.models()["digits"].version == 2
    events = await bot.services.store.model_events("digits", action="promote")
    assert (events[0].from_version, events[0].to_version, events[0].job_id) == (1, 2, 2)
    await bot.photo(user, photos[0][0])
    latest = await bot.services.store.user_predictions(user, limit=1)
    assert (latest[0].model, latest[0].version) == ("digits", 2)


async def test_a_poisoned_batch_is_rejected_and_the_serving_version_stays(
    bot: BotHarness, mnist_path: Path
) -> None:
    # Held out by person: Mallory (309) lands on the trained side, Mira's photos are the held-out ones.
    admin, poisoner = bot.user(ADMIN_ID, "Root"), bot.user(309, "Mallory")
    await send_labelled(bot, poisoner, digit_photos(mnist_path, 40, seed=2, offset=200), wrong=True)
    serving = bot.services.model_store.active_version("digits")
    # Chat photos weigh at most 5 base examples by default, too little for 40 wrong labels to move the
    # model: this admin lets them weigh 60% of the training (once 113 copies each, now weight 112.5 on
    # one copy: fewer optimizer steps, so 6 epochs instead of 3), so the gate has a loss to stop.
    strong = ("--chat-share", "0.6", "--max-chat-weight", "150")
    runner_of(bot).extra_args = (*SMALL_JOB[:-1], "6", *strong)
    try:
        start = bot.server.chat(admin).revision
        await bot.say(admin, "/retrain digits")
        report = await report_of(bot, start)
    finally:
        runner_of(bot).extra_args = SMALL_JOB
    text = report["text"]
    assert "REJECTED:" in text and f"v{serving} keeps serving" in text, text
    assert re.search(r"Why: MNIST test .*a loss of \d+\.\d\d points, more than the 1\.5 allowed", text), text
    job = (await bot.services.store.recent_retrain_jobs("digits", limit=1))[0]
    assert (job.status, job.decision) == ("rejected", "reject")
    rejected = bot.services.model_store.get("digits", job.candidate_version)
    assert (
        rejected.meta["status"] == "rejected"
        and "more than the 1.5 allowed" in rejected.meta["gate"]["reason"]
    )
    assert bot.services.model_store.active_version("digits") == serving
    assert bot.services.classifier.models()["digits"].version == serving


async def test_a_second_retrain_is_told_which_job_runs_and_a_killed_job_changes_nothing(
    bot: BotHarness,
) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    serving = bot.services.model_store.active_version("digits")
    versions = len(bot.services.model_store.versions("digits"))
    runner_of(bot).extra_args = ("--limit", "10000", "--test-limit", "500", "--epochs", "50")  # killed midway
    start = bot.server.chat(admin).revision
    progress = await bot.say(admin, "/retrain digits force")
    job_id = int(re.match(r"Retraining digits \(job (\d+)\)", progress["text"]).group(1))
    busy = await bot.say(admin, "/retrain digits")
    assert (
        busy["text"].startswith("A retraining job is already ") and f"job {job_id} (digits)" in busy["text"]
    )
    for _ in range(600):
        job = await bot.services.store.get_retrain_job(job_id)
        if job.stage == "training":
            break
        await asyncio.sleep(0.1)
    assert job.stage == "training", job
    runner_of(bot).running[job_id].process.kill()
    failed = await bot.server.wait_for(
        admin,
        lambda e: e["type"] == "message" and "failed" in e["message"].get("text", ""),
        after=start,
        timeout=30,
    )
    assert failed["message"]["text"] == (
        f"Retraining digits (job {job_id}) failed: the job process was killed by SIGKILL before finishing\n"
        f"Nothing changed: v{serving} keeps serving."
    )
    job = await bot.services.store.get_retrain_job(job_id)
    assert job.status == "failed" and "SIGKILL" in job.error
    assert bot.services.model_store.active_version("digits") == serving
    assert len(bot.services.model_store.versions("digits")) == versions
    assert bot.services.classifier.models()["digits"].version == serving
    runner_of(bot).extra_args = SMALL_JOB


async def test_rollback_returns_to_the_earlier_version_and_the_bot_serves_it(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    assert bot.services.model_store.active_version("digits") == 2
    ask = await bot.say(admin, "/rollback digits")
    assert bot.services.model_store.active_version("digits") == 2  # asked, not done yet
    _, reply = await bot.press(admin, ask, button_data(ask, "Yes, roll back"))
    assert reply["text"] == "digits now serves v1."
    assert bot.services.classifier.models()["digits"].version == 1
    ask = await bot.say(admin, "/rollback digits 2")
    _, reply = await bot.press(admin, ask, button_data(ask, "Yes, roll back"))
    assert reply["text"] == "digits now serves v2."
    assert bot.services.classifier.models()["digits"].version == 2


@pytest.mark.parametrize("command", ["/retrain", "/retrain flowers force", "/rollback digits 1"])
async def test_retraining_commands_by_anyone_else_are_refused(bot: BotHarness, command: str) -> None:
    user = bot.user(303, "Eve")
    jobs = len(await bot.services.store.recent_retrain_jobs(limit=100))
    serving = bot.services.model_store.active_version("digits")
    reply = await bot.say(user, command)
    assert reply["text"] == "Sorry, this command is for admins only."
    assert len(await bot.services.store.recent_retrain_jobs(limit=100)) == jobs
    assert bot.services.model_store.active_version("digits") == serving
