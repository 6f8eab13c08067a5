"""Teaching a new model from the chat, end to end: a real bot over HTTP against the fake Bot API server,
real photos, a real retrain job process.

An admin creates `animals` (dog, bird, reptile, bug: broad categories of real ImageNet photos, one photo
per species or breed); two people teach it captioned photos; /retrain builds and promotes its first
version; a third person's photos in `/use animals` mode get the right label. Non-admins cannot create or
delete; bad names and labels get clear answers; a restart keeps the model and the chat's mode; a model
deleted while its job runs fails the job cleanly.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bot.retraining import RetrainRunner
from bot.texts import text
from photobot.wiring import retrain_config
from tests.support.animals import animal_photos
from tests.support.bot import ADMIN_ID, BotHarness, button_data, digit_photo, start_bot, stop_bot
from training.flower_data import BottleneckCache

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
LABELS = ("dog", "bird", "reptile", "bug")
PER_PERSON = 6  # each of two people teaches 6 photos of each label: 12 per label
ANN, BOB, CLEO, EVE = 710_001, 710_002, 710_003, 710_004
REPORT = re.compile(r"^Retraining animals \(job (\d+)\)\n(PROMOTED|REJECTED)")


@pytest.fixture(scope="module")
def photos(mnist_path: Path) -> dict[str, list[Path]]:
    return animal_photos(mnist_path.parent / "other_photos")


async def _start(data_dir: Path, model_dir: Path, mnist_path: Path) -> BotHarness:
    harness = await start_bot(
        data_dir,
        model_dir,
        datasets=(mnist_path.parent,),
        user_photos_per_minute=0,
        user_updates_per_minute=0,
        retrain_min_contributors=2,
        retrain_max_user_share=0.5,
    )
    runner = RetrainRunner(retrain_config(harness.settings), poll_s=0.2, nice=0)
    harness.application.bot_data["retraining"] = runner
    return harness


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teach")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bots(data_dir: Path, model_dir: Path, mnist_path: Path):
    """The bot, started again by the restart test: `bots[-1]` is the running one."""
    started = [await _start(data_dir, model_dir, mnist_path)]
    yield started
    runner: RetrainRunner = started[-1].application.bot_data["retraining"]
    await runner.close(stop_jobs=True)
    await stop_bot(started[-1])


async def test_non_admins_cannot_create_or_delete_models(bots: list[BotHarness]) -> None:
    bot = bots[-1]
    eve = bot.user(EVE, "Eve")
    for command in ("/newmodel pets dog cat", "/delmodel pets", "/addlabel pets cow", "/dellabel pets dog"):
        assert (await bot.say(eve, command))["text"] == text("en", "not_allowed")
    assert await bot.services.store.taught_models() == []


async def test_bad_names_and_labels_get_clear_answers(bots: list[BotHarness]) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    (bot.settings.models_dir / "oldpets" / "v1").mkdir(parents=True)  # versions a new model must not get
    answers = {
        "/newmodel oldpets dog cat": text("en", "teach_name_taken", name="oldpets"),
        "/newmodel": text("en", "newmodel_usage"),
        "/newmodel Pets dog cat": text("en", "teach_bad_name", name="Pets"),
        "/newmodel flowers dog cat": text("en", "teach_name_taken", name="flowers"),
        "/newmodel pets dog": text("en", "teach_label_count", count=1, low=2, high=50),
        "/newmodel pets dog Dog": text("en", "teach_label_twice", label="dog"),
        "/newmodel pets dog 42": text("en", "teach_bad_label", label="42"),
        f"/newmodel pets dog {'x' * 31}": text("en", "teach_label_too_long", label="x" * 31, limit=30),
    }
    for command, expected in answers.items():
        assert (await bot.say(admin, command))["text"] == expected, command
    ru = bot.user(ADMIN_ID + 1, "Рут", language_code="ru")
    assert await bot.services.store.taught_models() == []
    assert (await bot.say(ru, "/newmodel pets dog")).get("text") == text("ru", "not_allowed")


async def test_an_admin_creates_a_model_and_two_people_teach_it(
    bots: list[BotHarness], photos: dict[str, list[Path]]
) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    made = await bot.say(admin, "/newmodel animals dog bird reptile bug")
    assert made["text"] == text(
        "en", "newmodel_done", model="animals", labels="dog, bird, reptile, bug", example="dog", minimum=10
    )
    assert "animals" in bot.services.catalogue and bot.services.catalogue["animals"].mode == "animals"

    ann, bob = bot.user(ANN, "Ann"), bot.user(BOB, "Боб", language_code="ru")
    first = await bot.photo(ann, photos["dog"][0].read_bytes(), caption="Dog")
    assert first["text"] == "\n\n".join(
        [
            text("en", "teach_not_serving", model="animals"),
            text("en", "teach_count", label="dog", count=1, minimum=10),
        ]
    )
    for label in LABELS:
        for index in range(1 if label == "dog" else 0, PER_PERSON):
            await bot.photo(ann, photos[label][index].read_bytes(), caption=label)
        for index in range(PER_PERSON, 2 * PER_PERSON):
            caption = f"animals: {label}" if index % 2 else label
            last = await bot.photo(bob, photos[label][index].read_bytes(), caption=caption)
        assert last["text"].endswith(text("ru", "teach_count", label=label, count=12, minimum=10))
    eve = bot.user(EVE, "Eve")  # the block list applies to teaching too
    await bot.say(admin, f"/block {EVE}")
    blocked = await bot.photo(eve, photos["dog"][40].read_bytes(), caption="dog")
    assert blocked["text"] == text("en", "contribution_blocked")
    labelled = await bot.services.store.labelled_set("animals")
    assert sorted(e.label for e in labelled.examples) == sorted(LABELS * 12)
    models = (await bot.say(admin, "/models"))["text"].splitlines()
    assert "animals — dog 12, bird 12, reptile 12, bug 12 · no version serves yet" in models, models

    # Each taught photo's features were computed when it arrived, into the cache /retrain reads.
    assert bot.services.features is not None
    await bot.services.features.drain()
    # Imported here: training.train_flowers imports TensorFlow, which every test worker would otherwise
    # load (~6 s of CPU) while collecting this module, marked slow and left out of `make test-fast`.
    from training.taught_features import MIRRORED
    from training.train_flowers import cache_key

    cache = BottleneckCache(bot.settings.data_dir / "cache" / "bottlenecks", cache_key())
    assert all(cache.get(example.sha256) is not None for example in labelled.examples)
    # … and those of its mirror image, which the head and the refusal learn from beside the photo.
    mirrored = BottleneckCache(bot.settings.data_dir / "cache" / "bottlenecks", cache_key() + MIRRORED)
    for example in labelled.examples:
        features, mirror = cache.get(example.sha256), mirrored.get(example.sha256)
        assert features is not None and mirror is not None and mirror.shape == features.shape
        assert not np.allclose(mirror, features)


async def test_retrain_builds_the_first_version_and_a_third_person_gets_right_labels(
    bots: list[BotHarness], photos: dict[str, list[Path]]
) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    start = bot.server.chat(admin).revision
    progress = await bot.say(admin, "/retrain animals")
    assert progress["text"].startswith("Retraining animals (job 1)")
    event = await bot.server.wait_for(
        admin,
        lambda e: e["type"] == "message" and bool(REPORT.match(e["message"].get("text", ""))),
        after=start,
        timeout=300,
    )
    report = event["message"]["text"]
    assert REPORT.match(report).group(2) == "PROMOTED", report  # type: ignore[union-attr]
    assert "nearest centroid" in report and "per label: dog" in report
    assert text("en", "retrain_serving_now", model="animals", version=1) in report
    assert bot.services.classifier.models()["animals"].version == 1

    runner: RetrainRunner = bot.application.bot_data["retraining"]
    for job_id in list(runner.running):  # the report's pictures come next: let them all arrive
        await runner.wait(job_id)
    models = (await bot.say(admin, "/models"))["text"].splitlines()
    assert text("en", "models_labels_header") in models
    assert "animals — dog 12, bird 12, reptile 12, bug 12 · v1 serves" in models, models

    cleo = bot.user(CLEO, "Cleo")
    assert (await bot.say(cleo, "/use animals"))["text"] == text(
        "en", "mode_model", model="animals", labels="dog, bird, reptile, bug"
    )
    unseen = {label: photos[label][12:14] for label in LABELS}  # never taught
    right = 0
    for label, found in unseen.items():
        for photo in found:
            answer = await bot.photo(cleo, photo.read_bytes())
            right += answer["text"].split(" — ")[0] == label
    assert right >= 6, right  # of 8 unseen photos of four broad categories (measured: 86% top label)


async def test_a_restart_keeps_the_model_its_version_and_the_chats_mode(
    bots: list[BotHarness], data_dir: Path, model_dir: Path, mnist_path: Path, photos: dict[str, list[Path]]
) -> None:
    old = bots[-1]
    await old.application.bot_data["retraining"].close()
    await stop_bot(old)
    bot = await _start(data_dir, model_dir, mnist_path)
    bots.append(bot)
    assert bot.services.catalogue["animals"].label_names == LABELS
    assert bot.services.classifier.models()["animals"].version == 1
    assert await bot.services.chat_mode(CLEO) == "animals"
    bot.user(CLEO, "Cleo")
    answer = await bot.photo(CLEO, photos["bird"][14].read_bytes())
    prediction = await bot.services.store.get_prediction(int(button_data(answer, "✅ Correct").split(":")[1]))
    assert prediction is not None and (prediction.model, prediction.version) == ("animals", 1)


async def test_auto_mode_asks_the_taught_model_when_the_digit_reader_is_not_sure(
    bots: list[BotHarness], photos: dict[str, list[Path]], glyphs
) -> None:
    bot = bots[-1]
    dana = bot.user(CLEO + 10, "Dana")
    assert await bot.services.chat_mode(dana) == "auto"
    for label in ("bird", "reptile"):  # photos it was taught: it is sure of them
        answer = await bot.photo(dana, photos[label][0].read_bytes())
        assert answer["text"].split(" — ")[0] == label, answer["text"]
        prediction_id = int(button_data(answer, "✅ Correct").split(":")[1])
        prediction = await bot.services.store.get_prediction(prediction_id)
        assert prediction is not None and (prediction.model, prediction.mode) == ("animals", "auto")
    digit = await bot.photo(dana, digit_photo(glyphs[7]))  # a digit on paper is still a digit
    assert digit["text"].split(" — ")[0] == "7", digit["text"]


async def test_until_the_next_retrain_use_names_the_labels_the_serving_version_answers(
    bots: list[BotHarness],
) -> None:
    """After /addlabel and /dellabel the serving version still answers with the labels it learned: /use
    lists those, not the ones the next retrain learns (a person was told "one of: dog, bird, bug" and
    then answered "reptile — 99%")."""
    bot = bots[-1]
    admin, cleo = bot.user(ADMIN_ID, "Root"), bot.user(CLEO, "Cleo")
    for command in ("/addlabel animals fish", "/dellabel animals reptile"):
        assert (await bot.say(admin, command))["text"].startswith("“")
    assert bot.services.catalogue["animals"].label_names == ("dog", "bird", "bug", "fish")
    assert (await bot.say(cleo, "/use animals"))["text"] == text(
        "en", "mode_model", model="animals", labels="dog, bird, reptile, bug"
    )
    for command in ("/dellabel animals fish", "/addlabel animals reptile"):
        assert (await bot.say(admin, command))["text"].startswith("“")


async def test_a_model_deleted_while_its_job_runs_fails_the_job_cleanly(bots: list[BotHarness]) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    start = bot.server.chat(admin).revision
    assert (await bot.say(admin, "/retrain animals force"))["text"].startswith("Retraining animals (job 2)")
    confirm = await bot.say(admin, "/delmodel animals")
    assert confirm["text"] == text("en", "delmodel_confirm", model="animals", photos=48)
    _, edited = await bot.press(admin, confirm, button_data(confirm, "Yes, delete animals"))
    assert edited is not None and edited["text"] == text("en", "delmodel_done", model="animals")
    assert "animals" not in bot.services.catalogue
    failed = await bot.server.wait_for(
        admin,
        lambda e: e["type"] == "message" and "failed" in e["message"].get("text", ""),
        after=start,
        timeout=300,
    )
    # Deleted before the job read the catalogue, or while it trained: either way it says so.
    assert re.search(r"animals was deleted.*; nothing was promoted", failed["message"]["text"]), failed
    job = await bot.services.store.get_retrain_job(2)
    assert job is not None and job.status == "failed"
    assert bot.services.model_store.active_version("animals") == 1  # nothing new promoted
    assert all(
        v.meta.get("status") != "promoted" or v.version == 1
        for v in bot.services.model_store.versions("animals")
    )
    labelled = await bot.services.store.labelled_set("animals")
    assert len(labelled.examples) == 48  # the labelled photos stay
    assert (await bot.say(admin, "/use animals"))["text"] == (
        text("en", "no_such_model", name="animals") + "\n" + text("en", "use_usage", models="digits")
    )
