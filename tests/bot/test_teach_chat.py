"""Teaching from the chat before any version serves, and after a model is gone: a real bot over HTTP
against the fake Bot API server, serving the harness's digit model.

The chat's mode must always be one the bot can answer in: `/use` of a model still learning says how to
teach it instead of switching, and a chat left in the mode of a model deleted since goes back to auto.
A caption that is a label of several models asks which one is meant, unless the chat uses one of them.
Names and labels that would read as something else are refused.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from telegram.ext import CommandHandler

from bot.handlers.teach import change_taught_labels
from bot.retraining import runner
from bot.texts import text
from inference.taught import COMMAND_NAMES
from storage.records import negative_label, new_watcher
from storage.taught import TaughtLabel
from tests.support.bot import ADMIN_ID, BotHarness, button_data, digit_photo, start_bot, stop_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")
ANN, BOB = 720_001, 720_002
DIGIT = "7 — "  # the start of a sure answer of the digit model to a 7


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    harness = await start_bot(
        tmp_path_factory.mktemp("teach-chat"), model_dir, user_photos_per_minute=0, user_updates_per_minute=0
    )
    admin = harness.user(ADMIN_ID, "Root")
    for command in ("/newmodel pets dog bird", "/newmodel animals dog cat"):
        assert (await harness.say(admin, command))["text"].startswith("New model")
    yield harness
    await stop_bot(harness)


async def test_use_of_a_model_still_learning_says_how_to_teach_it_and_keeps_the_mode(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    ann = bot.user(ANN)
    reply = await bot.say(ann, "/use pets")
    assert reply["text"] == text("en", "use_not_serving", model="pets", labels="dog, bird", example="dog")
    assert await bot.services.store.chat_mode(ANN) == "auto"
    answer = await bot.photo(ann, digit_photo(glyphs[7]))
    assert answer["text"].startswith(DIGIT), answer["text"]


async def test_a_label_of_two_models_is_asked_about_unless_the_chat_uses_one_of_them(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    bob = bot.user(BOB, "Bob", language_code="ru")
    photo = digit_photo(glyphs[2], seed=5)
    asked = await bot.photo(bob, photo, caption="Dog")
    assert asked["text"] == text(
        "ru", "caption_ambiguous", caption="Dog", models="pets, animals", example="pets: dog"
    )
    for model in ("pets", "animals"):  # recorded for neither
        assert (await bot.services.store.labelled_set(model)).examples == ()

    named = await bot.photo(bob, photo, caption="animals: dog")
    assert text("ru", "teach_not_serving", model="animals") in named["text"]
    assert "dog: 1" in named["text"]

    await bot.services.store.set_chat_mode(BOB, "pets")  # as `/use pets` leaves it once pets serves
    chosen = await bot.photo(bob, digit_photo(glyphs[2], seed=6), caption="dog")
    assert text("ru", "teach_not_serving", model="pets") in chosen["text"]
    assert [e.label for e in (await bot.services.store.labelled_set("pets")).examples] == ["dog"]
    await bot.services.store.set_chat_mode(BOB, "auto")


async def test_names_that_are_commands_and_labels_that_mean_none_are_refused(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    reply = await bot.say(admin, "/newmodel help dog bird")
    assert reply["text"] == text("en", "teach_name_command", name="help")
    reply = await bot.say(admin, "/newmodel zoo dog not_zoo")
    assert reply["text"] == text("en", "teach_reserved_label", label="not_zoo")
    assert "zoo" not in bot.services.catalogue and "help" not in bot.services.catalogue


async def test_every_command_of_the_bot_is_a_name_no_model_may_take(bot: BotHarness) -> None:
    commands = {
        command
        for handlers in bot.application.handlers.values()
        for handler in handlers
        if isinstance(handler, CommandHandler)
        for command in handler.commands
    }
    assert "newmodel" in commands and "use" in commands  # the handlers were found
    assert commands <= COMMAND_NAMES


async def test_a_rollback_to_the_version_serving_asks_nothing(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    serving = bot.services.model_store.active_version("digits")
    reply = await bot.say(admin, f"/rollback digits {serving}")
    assert reply["text"] == text("en", "rollback_serving", name="digits", version=serving)
    assert "reply_markup" not in reply


async def test_a_chat_in_the_mode_of_a_deleted_model_goes_back_to_auto(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    ann, admin = bot.user(ANN), bot.user(ADMIN_ID, "Root")
    await bot.services.store.set_chat_mode(ANN, "animals")
    ask = await bot.say(admin, "/delmodel animals")
    yes = button_data(ask, "Yes, delete animals")
    _, done = await bot.press(admin, ask, yes)
    assert done is not None and done["text"] == text("en", "delmodel_done", model="animals")
    # A second press (sent before the first edit removed the buttons) deletes nothing more.
    again, _ = await bot.press(admin, ask, yes, check=False, edited=False)
    assert again["text"] == text("en", "delmodel_already", model="animals")
    assert [m.name for m in await bot.services.store.taught_models()] == ["pets"]

    first = await bot.photo(ann, digit_photo(glyphs[7], seed=1))
    gone, answer = first["text"].split("\n\n", 1)
    assert gone == text("en", "mode_gone", model="animals")
    assert answer.startswith(DIGIT), answer
    assert await bot.services.store.chat_mode(ANN) == "auto"
    second = await bot.photo(ann, digit_photo(glyphs[7], seed=2))
    assert second["text"].startswith(DIGIT), second["text"]  # said once


async def test_a_rollback_to_a_rejected_version_says_why_it_was_rejected(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    model_store = bot.services.model_store
    serving = model_store.active("digits")
    gate = {"promote": False, "reason": "MNIST test 99.45% → 99.10%: a loss of 0.35 points"}
    rejected = model_store.add_version(
        "digits", serving.path, {**serving.meta, "status": "rejected", "gate": gate}
    )
    ask = await bot.say(admin, f"/rollback digits {rejected.version}")
    assert ask["text"].endswith(
        f"Careful: v{rejected.version} was rejected when it was made "
        "(MNIST test 99.45% → 99.10%: a loss of 0.35 points)."
    )
    assert model_store.active_version("digits") == serving.version  # nothing changes before Yes


async def test_a_job_that_ended_unwatched_is_reported_only_to_an_admin(bot: BotHarness) -> None:
    """Reported at the next start (`report_ended_unwatched`), to the admin who asked: someone removed
    from ADMIN_IDS meanwhile gets no report (its pictures show people's photos)."""
    former, admin = bot.user(720_009, "Ex"), bot.user(ADMIN_ID, "Root")
    store, ids = bot.services.store, {}
    for person in (former, admin):
        shown = await bot.say(person, "/help")  # stands for the job's progress message
        job = await store.create_retrain_job(
            "digits", requested_by=person, chat_id=person, watcher=new_watcher()
        )
        await store.set_retrain_message(job.id, shown["message_id"])
        await store.start_retrain_job(job.id, pid=os.getpid())
        await store.unwatch_retrain_jobs([job.id], job.watcher or "")
        await store.fail_retrain_job(job.id, "stopped by signal SIGTERM")
        ids[person] = job.id
    marks = {person: bot.server.chat(person).revision for person in ids}
    jobs = runner(bot.application.bot_data, bot.services.retrain)
    reported = await jobs.report_ended_unwatched(bot.services, bot.application.bot)
    assert [job.id for job in reported] == [ids[former], ids[admin]]

    def said(person: int) -> list[str]:
        events = bot.server.chat(person).events[marks[person] :]
        return [
            e["message"]["text"] for e in events if e["type"] == "message" and e["message"]["from"]["is_bot"]
        ]

    serving = bot.services.model_store.active_version("digits")
    assert said(admin) == [
        f"Retraining digits (job {ids[admin]}) failed: stopped by signal SIGTERM\n"
        f"Nothing changed: v{serving} keeps serving."
    ]
    assert said(former) == []
    assert await jobs.report_ended_unwatched(bot.services, bot.application.bot) == []  # once


async def test_models_names_each_model_as_retrain_takes_it_beside_its_name_in_russian(
    bot: BotHarness,
) -> None:
    admin = bot.user(ADMIN_ID, "Рут", language_code="ru")
    try:
        models = (await bot.say(admin, "/models"))["text"]
    finally:
        bot.user(ADMIN_ID, "Root")
    assert "цифры (digits) — 0 " in models, models  # the version lines above say "digits v1"
    assert "pets — dog " in models, models  # a taught model's name is its only name


async def test_models_leaves_out_the_versions_of_a_deleted_model(bot: BotHarness) -> None:
    """A deleted taught model's versions stay in the store, unserved: /models no longer lists them."""
    admin = bot.user(ADMIN_ID, "Root")
    serving = bot.services.model_store.active("digits")
    bot.services.model_store.add_version("animals", serving.path, {"labels": ["dog", "cat"]})  # deleted above
    models = (await bot.say(admin, "/models"))["text"]
    assert f"digits v{serving.version}" in models and "animals v" not in models, models


async def test_delmodel_counts_the_photos_that_models_shows(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    """A photo people marked "none of these" is not a photo of one of the model's labels: /delmodel's
    confirmation counts what /models and the teaching replies count."""
    admin, ann = bot.user(ADMIN_ID, "Root"), bot.user(ANN)
    assert (await bot.say(admin, "/newmodel birds robin wren"))["text"].startswith("New model")
    hashes = []
    for seed in (31, 32):
        reply = await bot.photo(ann, digit_photo(glyphs[1], seed=seed), caption="birds: robin")
        assert "robin: " in reply["text"], reply["text"]
        examples = (await bot.services.store.labelled_set("birds")).examples
        hashes.append(next(e.sha256 for e in examples if e.sha256 not in hashes))
    for voter in (720_101, 720_102):  # two people outvote the caption: `other` shows none of them
        await bot.services.store.record_contribution(
            user_id=voter,
            chat_id=voter,
            message_id=None,
            photo_sha256=hashes[1],
            model="birds",
            label=negative_label("birds"),
        )
    labelled = await bot.services.store.labelled_set("birds")
    assert sorted(e.label for e in labelled.examples) == sorted(["robin", negative_label("birds")])

    ask = await bot.say(admin, "/delmodel birds")
    assert ask["text"] == text("en", "delmodel_confirm", model="birds", photos=1)
    await bot.press(admin, ask, button_data(ask, text("en", "delmodel_no")))
    assert "birds — robin 1, wren 0" in (await bot.say(admin, "/models"))["text"]


async def test_a_second_press_of_no_keep_it_is_no_error(
    bot: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram delivers a press made before the first press's edit arrived: the edit to the same text
    is "not modified", which was logged as an ERROR with its traceback."""
    admin = bot.user(ADMIN_ID, "Root")
    ask = await bot.say(admin, "/delmodel pets")
    no = button_data(ask, text("en", "delmodel_no"))
    await bot.press(admin, ask, no)
    with caplog.at_level(logging.INFO):
        again, _ = await bot.press(admin, ask, no, check=False, edited=False)
        await bot.quiet_for(admin, 0.5)  # the edit after the answer
    assert not again.get("show_alert"), again
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [m.name for m in await bot.services.store.taught_models()] == ["pets", "birds"]


async def test_a_job_whose_bot_process_was_killed_is_reported_by_the_next_one(bot: BotHarness) -> None:
    """A bot process killed while it watched a job cannot let go of it: the job ended, and its admin's
    message stayed at "loading data 0%" even after a restart. A job another live process watches is
    left to it; each is reported once."""
    admin = bot.user(ADMIN_ID, "Root")
    host = socket.gethostname()
    ids = {}
    for who, watcher in (("killed", f"{host}/{_ended_pid()}/x1"), ("alive", new_watcher())):
        shown = await bot.say(admin, "/help")  # stands for the job's progress message
        job = await bot.services.store.create_retrain_job(
            "digits", requested_by=ADMIN_ID, chat_id=ADMIN_ID, watcher=watcher
        )
        await bot.services.store.set_retrain_message(job.id, shown["message_id"])
        await bot.services.store.start_retrain_job(job.id, pid=os.getpid())
        await bot.services.store.fail_retrain_job(job.id, "the job process was killed by SIGKILL")
        ids[who] = job.id
    jobs = runner(bot.application.bot_data, bot.services.retrain)
    reported = await jobs.report_ended_unwatched(bot.services, bot.application.bot)
    assert [job.id for job in reported] == [ids["killed"]]
    assert await jobs.report_ended_unwatched(bot.services, bot.application.bot) == []  # once


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


async def test_a_label_another_bot_process_added_meanwhile_is_kept(bot: BotHarness) -> None:
    """/addlabel on two replicas at once: each wrote the labels its replica knew plus its own, and the
    label of the first was lost while both admins were told it was added."""
    admin = bot.user(ADMIN_ID, "Root")
    assert (await bot.say(admin, "/newmodel zoo ant bee"))["text"].startswith("New model")
    await bot.services.store.set_taught_labels(  # another replica's /addlabel zoo cat, not seen here yet
        "zoo", [TaughtLabel("ant"), TaughtLabel("bee"), TaughtLabel("cat")], expected=("ant", "bee")
    )
    assert bot.services.catalogue["zoo"].label_names == ("ant", "bee")
    await change_taught_labels(
        bot.services, "zoo", lambda now: [*(TaughtLabel(n) for n in now.label_names), TaughtLabel("dog")]
    )
    (zoo,) = [m for m in await bot.services.store.taught_models() if m.name == "zoo"]
    assert zoo.label_names == ("ant", "bee", "cat", "dog")


async def test_an_album_captioned_with_a_label_teaches_every_photo_of_it(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    """Telegram keeps an album's caption on its first photo only; the person meant all of them."""
    admin, ann = bot.user(ADMIN_ID, "Root"), bot.user(ANN)
    assert (await bot.say(admin, "/newmodel garden fern ivy"))["text"].startswith("New model")
    photos = [digit_photo(glyphs[digit], seed=40 + digit) for digit in (1, 2, 3)]

    taught = await bot.album(ann, photos, ["fern", None, None])
    assert all(text("en", "teach_not_serving", model="garden") in reply["text"] for reply in taught)
    counted = [text("en", "teach_count", label="fern", count=n, minimum=10) for n in (1, 2, 3)]
    assert sorted(next(c for c in counted if c in reply["text"]) for reply in taught) == counted
    labelled = await bot.services.store.labelled_set("garden")
    assert [example.label for example in labelled.examples] == ["fern"] * 3

    # A caption on a later photo is that photo's own; an album without one is answered photo by photo.
    others = [digit_photo(glyphs[digit], seed=50 + digit) for digit in (4, 5, 6)]
    own = await bot.album(ann, others, [None, "ivy", None])
    assert own[0]["text"].startswith("4 — ") and own[2]["text"].startswith("6 — "), own
    assert "ivy: 1 of at least" in own[1]["text"]
    plain = await bot.album(
        ann, [digit_photo(glyphs[7], seed=60), digit_photo(glyphs[8], seed=61)], [None, None]
    )
    assert [reply["text"][:4] for reply in plain] == ["7 — ", "8 — "]
    labelled = await bot.services.store.labelled_set("garden")
    assert sorted(example.label for example in labelled.examples) == ["fern"] * 3 + ["ivy"]


async def test_an_album_whose_first_photo_another_replica_got_takes_its_caption(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    """Webhook replicas share the album's photos through the database: Telegram spreads an album's
    messages over the webhook's connections, so its first photo may reach another replica."""
    admin, bob = bot.user(ADMIN_ID, "Root"), bot.user(BOB, "Bob")
    assert (await bot.say(admin, "/newmodel shrubs box yew"))["text"].startswith("New model")
    await bot.say(bob, "/help")  # his chat's first message: the album's photos come after it
    await bot.services.store.note_album_photo(BOB, "album-7", 1, BOB, "shrubs: yew")  # the other replica's
    (answer,) = await bot.album(bob, [digit_photo(glyphs[9], seed=70)], [None], group_id="album-7")
    assert "yew: 1 of at least" in answer["text"]
    assert [e.label for e in (await bot.services.store.labelled_set("shrubs")).examples] == ["yew"]


async def test_a_caption_naming_a_model_but_none_of_its_labels_lists_them(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    ann = bot.user(ANN)
    before = (await bot.services.store.labelled_set("pets")).examples
    answer = await bot.photo(ann, digit_photo(glyphs[3], seed=80), caption="Pets: fish")
    assert answer["text"].endswith(
        text("en", "contribution_not_a_label_of", model="pets", label="fish", labels="dog, bird")
    )
    answer = await bot.photo(ann, digit_photo(glyphs[3], seed=81), caption="fish")
    assert answer["text"].endswith(text("en", "contribution_unknown_label", caption="fish"))
    assert (await bot.services.store.labelled_set("pets")).examples == before


async def test_a_caption_naming_a_deleted_model_says_it_was_deleted(
    bot: BotHarness, glyphs: dict[int, np.ndarray]
) -> None:
    assert "animals" not in bot.services.catalogue  # deleted by an earlier test of this module
    russian = bot.user(BOB + 100, "Боб", language_code="ru")
    answer = await bot.photo(russian, digit_photo(glyphs[5], seed=90), caption="Animals: dog")
    assert answer["text"].endswith(text("ru", "contribution_model_deleted", model="animals"))
