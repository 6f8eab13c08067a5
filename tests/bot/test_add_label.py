"""A label added to the flowers from the chat, end to end: a real bot over HTTP against the fake Bot API
server, a real flower model on the real backbone, real photos, a real retrain job process.

The served flower model is trained here by `photobot train flowers` on three flowers (daisy, roses,
sunflowers; 24 real photos each), so a flower it has never seen is at hand: real tulip photos stand in
for lavender. An admin adds `lavender`; four people caption 20 tulip photos `lavender` or
`flowers: lavender`; the served model keeps answering its three labels (❌ already offers lavender,
/models counts its photos) until `/retrain flowers` builds a version with a fourth output, promoted
through the gate; then an unseen tulip is answered `lavender`. Non-admins cannot add or remove labels,
the built-in labels cannot be removed, a restart keeps the label, a rollback to the three-label version
answers as before (and keeps the label), and /dellabel removes it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import pytest_asyncio

from bot.retraining import RetrainRunner
from bot.texts import text
from photobot.cli import main
from photobot.wiring import retrain_config
from tests.support.bot import ADMIN_ID, BotHarness, button_data, buttons, start_bot, stop_bot

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
CLASSES = ("daisy", "roses", "sunflowers")
PER_CLASS = 24
TAUGHT = 20  # tulip photos captioned "lavender", five from each of four people
PEOPLE = (720_001, 720_002, 720_003, 720_004)
ADMIN_RU, EVE, GARDENER, NEWCOMER = 720_010, 720_011, 720_012, 720_013
REPORT = re.compile(r"^Retraining flowers \(job (\d+)\)\n(PROMOTED|REJECTED)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, flowers_path: Path, mnist_path: Path) -> Path:
    """A data dir whose flower model knows three flowers, trained on their first photos (its base data)."""
    root = tmp_path_factory.mktemp("add-label")
    photos = root / "photos"
    for label in CLASSES:
        (photos / label).mkdir(parents=True)
        for photo in sorted((flowers_path / label).glob("*.jpg"))[:PER_CLASS]:
            os.symlink(photo, photos / label / photo.name)
    data_dir = root / "var"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        monkeypatch.setenv("DATA_DIR", str(data_dir))
        monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
        quick = ["--validation-percent", "20", "--test-percent", "20", "--non-flower-photos", "12"]
        assert main(["train", "flowers", "--images", str(photos), *quick, "--no-package-photos"]) == 0
    (data_dir / "datasets").mkdir()
    os.symlink(photos, data_dir / "datasets" / "flower_photos")  # what its retrain learns beside the chat
    os.symlink(mnist_path, data_dir / "datasets" / "mnist.npz")
    return data_dir


@pytest.fixture(scope="module")
def tulips(flowers_path: Path) -> list[Path]:
    return sorted((flowers_path / "tulips").glob("*.jpg"))


async def _start(data_dir: Path, model_dir: Path) -> BotHarness:
    harness = await start_bot(
        data_dir,
        model_dir,
        names=("digits", "flowers"),
        datasets=(),
        admin_ids=frozenset({ADMIN_ID, ADMIN_RU}),
        user_photos_per_minute=0,
        user_updates_per_minute=0,
        retrain_min_new_labels=10,
    )
    harness.application.bot_data["retraining"] = RetrainRunner(
        retrain_config(harness.settings), poll_s=0.2, nice=0
    )
    return harness


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bots(data_dir: Path, model_dir: Path):
    """The bot, started again by the restart test: `bots[-1]` is the running one."""
    started = [await _start(data_dir, model_dir)]
    yield started
    runner: RetrainRunner = started[-1].application.bot_data["retraining"]
    await runner.close(stop_jobs=True)
    await stop_bot(started[-1])


async def _label_of(bot: BotHarness, user: int, answer: dict) -> str | None:
    """The label the bot recorded for an answer (None: refused)."""
    prediction_id = int(buttons(answer)[0][1].split(":")[1])
    prediction = await bot.services.store.get_prediction(prediction_id)
    assert prediction is not None and prediction.user_id == user
    return prediction.label


async def test_non_admins_cannot_add_or_remove_labels(bots: list[BotHarness]) -> None:
    bot = bots[-1]
    eve = bot.user(EVE, "Eve")
    for command in ("/addlabel flowers lavender", "/dellabel flowers daisy"):
        assert (await bot.say(eve, command))["text"] == text("en", "not_allowed")
    assert await bot.services.store.added_labels() == []
    assert "lavender" not in bot.services.catalogue["flowers"].label_names


async def test_an_admin_adds_lavender_and_people_teach_it_while_the_model_answers_as_before(
    bots: list[BotHarness], tulips: list[Path]
) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    added = await bot.say(admin, "/addlabel flowers Lavender")
    labels = "daisy, roses, sunflowers, lavender"
    assert added["text"] == text(
        "en", "addlabel_done_builtin", model="flowers", labels=labels, label="lavender", minimum=10
    )
    assert f"a flower — {labels} — and" in (await bot.say(admin, "/help"))["text"]
    ru = bot.user(ADMIN_RU, "Рут", language_code="ru")
    assert "цветка (ромашка, розы, подсолнухи, lavender)" in (await bot.say(ru, "/help"))["text"]
    assert (await bot.say(ru, "/addlabel flowers lavender"))["text"] == text(
        "ru", "teach_label_exists", label="lavender"
    )
    assert (await bot.say(ru, "/dellabel flowers daisy"))["text"] == text(
        "ru", "dellabel_builtin", model="flowers", label="daisy", added="lavender"
    )

    people = [bot.user(user, f"Gardener {index}") for index, user in enumerate(PEOPLE)]
    for index, photo in enumerate(tulips[:TAUGHT]):
        caption = "flowers: lavender" if index % 2 else "lavender"
        answer = await bot.photo(people[index % len(people)], photo.read_bytes(), caption=caption)
        assert answer["text"].endswith(
            text("en", "teach_count", label="lavender", count=index + 1, minimum=10)
        )
    labelled = await bot.services.store.labelled_set("flowers")
    assert sorted(e.label for e in labelled.examples) == ["lavender"] * TAUGHT
    models = (await bot.say(admin, "/models"))["text"].splitlines()
    assert "flowers — daisy 0, roses 0, sunflowers 0, lavender 20 · v1 serves" in models, models

    # Before /retrain the served model answers with its three labels; ❌ already offers lavender.
    gardener = bot.user(GARDENER, "Gardener")
    await bot.say(gardener, "/flower")
    answer = await bot.photo(gardener, tulips[TAUGHT].read_bytes())
    assert await _label_of(bot, gardener, answer) in (*CLASSES, None)
    _, picker = await bot.press(gardener, answer, button_data(answer, "❌ Wrong"))
    assert picker is not None and "lavender" in [caption for caption, _ in buttons(picker)]


async def test_retrain_learns_lavender_through_the_gate_and_an_unseen_one_is_answered_with_it(
    bots: list[BotHarness], tulips: list[Path]
) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    start = bot.server.chat(admin).revision
    assert (await bot.say(admin, "/retrain flowers"))["text"].startswith("Retraining flowers (job 1)")
    event = await bot.server.wait_for(
        admin,
        lambda e: e["type"] == "message" and bool(REPORT.match(e["message"].get("text", ""))),
        after=start,
        timeout=300,
    )
    report = event["message"]["text"]
    assert REPORT.match(report).group(2) == "PROMOTED", report  # type: ignore[union-attr]
    assert re.search(r"held-out chat photos of lavender \(\d+\): \d+\.\d\d% \(a new label\)", report), report
    assert re.search(r"flowers test split \(\d+\): \d+\.\d\d% → \d+\.\d\d%", report), report
    assert text("en", "retrain_serving_now", model="flowers", version=2) in report
    runner: RetrainRunner = bot.application.bot_data["retraining"]
    for job_id in list(runner.running):  # the report's pictures come next: let them all arrive
        await runner.wait(job_id)
    served = bot.services.classifier.models()["flowers"]
    assert (served.version, served.labels) == (2, (*CLASSES, "lavender"))
    rule = bot.services.model_store.get("flowers", 2).meta["ood"]["imagenet"]
    assert set(rule["label_classes"]) == {"lavender"}  # the refusal accepts what its photos show

    unseen = [await bot.photo(GARDENER, photo.read_bytes()) for photo in tulips[TAUGHT : TAUGHT + 4]]
    answered = [await _label_of(bot, GARDENER, answer) for answer in unseen]
    assert answered.count("lavender") >= 3, answered
    assert any(answer["text"].startswith("lavender — ") for answer in unseen)


async def test_a_restart_keeps_the_added_label(
    bots: list[BotHarness], data_dir: Path, model_dir: Path, tulips: list[Path]
) -> None:
    old = bots[-1]
    await old.application.bot_data["retraining"].close()
    await stop_bot(old)
    bot = await _start(data_dir, model_dir)
    bots.append(bot)
    assert bot.services.catalogue["flowers"].label_names == (*CLASSES, "lavender")
    assert bot.services.classifier.models()["flowers"].version == 2
    person = bot.user(NEWCOMER, "Newcomer")  # a new chat: the restarted Bot API server counts messages anew
    answer = await bot.photo(person, tulips[TAUGHT + 5].read_bytes(), caption="lavender")
    assert answer["text"].endswith(text("en", "teach_count", label="lavender", count=TAUGHT + 1, minimum=10))


async def test_a_rollback_to_the_three_label_version_answers_as_before_and_keeps_the_label(
    bots: list[BotHarness], tulips: list[Path]
) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    ask = await bot.say(admin, "/rollback flowers")
    # The rollback loads the three-label version before it answers: as long as the retrain's wait.
    _, reply = await bot.press(admin, ask, button_data(ask, "Yes, roll back"), timeout=300)
    assert reply is not None and reply["text"] == "flowers now serves v1."
    await bot.say(NEWCOMER, "/flower")
    answer = await bot.photo(NEWCOMER, tulips[TAUGHT + 1].read_bytes())  # no caption: an answer
    assert await _label_of(bot, NEWCOMER, answer) in (*CLASSES, None)
    assert bot.services.catalogue["flowers"].label_names == (*CLASSES, "lavender")
    assert bot.services.catalogue.find_caption("lavender") == ("flowers", "lavender")


async def test_dellabel_removes_an_added_label_and_keeps_its_photos(bots: list[BotHarness]) -> None:
    bot = bots[-1]
    admin = bot.user(ADMIN_ID, "Root")
    removed = await bot.say(admin, "/dellabel flowers lavender")
    assert removed["text"] == text(
        "en", "dellabel_done", model="flowers", label="lavender", labels=", ".join(CLASSES)
    )
    assert bot.services.catalogue.find_caption("lavender") is None
    assert "a flower — daisy, roses, sunflowers — and" in (await bot.say(admin, "/help"))["text"]
    assert [(a.label, a.removed) for a in await bot.services.store.added_labels()] == [("lavender", True)]
    labelled = await bot.services.store.labelled_set("flowers")
    assert len(labelled.examples) == TAUGHT + 1  # the photos stay stored
