"""Issue 23 through the fake Bot API: a number is corrected as a number (also across a restart), the
photo counts of /stats, admin /stats and /forget agree, and the admin's output reads like plain words
(/models after a rollback, admin /help, /rollback confirmed by the admin who asked, /block of an id the
bot has not seen)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bot import callbacks
from tests.support.bot import (
    ADMIN_ID,
    BotHarness,
    button_data,
    buttons,
    digit_photo,
    start_bot,
    stop_bot,
)
from training.synth_photos import random_style, render_photo

pytestmark = pytest.mark.asyncio(loop_scope="module")
SECOND_ADMIN = 900_002
ASK = "Reply with the right number — digits only, such as 2026."
HINT = "Send me a photo of a digit or a flower. /help explains more."


@pytest.fixture(scope="module")
def number_2026(mnist_path: Path) -> bytes:
    """A phone-like photo of 2026 written with MNIST test digits."""
    with np.load(mnist_path) as data:
        x, y = data["x_test"], data["y_test"]
    chosen = [int(np.flatnonzero(y == int(d))[i]) for i, d in enumerate("2026")]
    rng = np.random.default_rng(7)
    style = random_style(rng, size=(960, 720), digit_height=0.2, rotation=0.0, tilt=0.0)
    photo, label = render_photo([x[i] for i in chosen], rng, style, labels=y[chosen])
    assert label == "2026"
    return photo


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    harness = await start_bot(
        tmp_path_factory.mktemp("data"), model_dir, admin_ids=frozenset({ADMIN_ID, SECOND_ADMIN})
    )
    yield harness
    await stop_bot(harness)


async def press_wrong_on_a_number(bot: BotHarness, user: int, photo: bytes) -> tuple[dict, dict, dict]:
    """Send a number in /digit mode and press ❌ (or "Something else…" under an unsure number);
    return the answer, the callback answer and the bot's question."""
    await bot.say(user, "/digit")
    reply = await bot.photo(user, photo)
    label = reply["text"].split(" — ", 1)[0]
    assert len(label) > 1 and label.isdigit(), reply["text"]
    captions = [t for t, _ in buttons(reply)]
    wrong = "❌ Wrong" if "❌ Wrong" in captions else "Something else…"
    after = bot.server.chat(user).revision
    toast, edited = await bot.press(user, reply, button_data(reply, wrong))
    question = await bot.next_message(user, after)
    # No 0–9 buttons that would record one digit of the number: only "Not a digit" and back.
    assert [t for t, _ in buttons(edited)] == ["Not a digit", "« Back"]
    return reply, toast, question


async def test_a_wrong_number_is_corrected_by_typing_the_number(bot: BotHarness, number_2026: bytes) -> None:
    user = bot.user(301)
    reply, toast, question = await press_wrong_on_a_number(bot, user, number_2026)
    assert toast["text"] == "Type the right number"
    assert question["text"] == ASK
    prediction_id = callbacks.decode(buttons(reply)[0][1]).prediction_id
    assert (await bot.say(user, "twenty"))["text"] == HINT  # not a number, not a reply: nothing stored
    assert await bot.services.store.get_feedback(prediction_id) is None

    thanks = await bot.say(user, "2026")

    label = reply["text"].split(" — ", 1)[0]
    assert thanks["text"] == (
        "Thank you! Recorded: 2026 is correct." if label == "2026" else "Thank you! Recorded: 2026."
    )
    feedback = await bot.services.store.get_feedback(prediction_id)
    assert (feedback.true_label, feedback.model) == ("2026", "digits")
    assert feedback.verdict == ("correct" if label == "2026" else "wrong")
    assert await bot.services.store.pending_correction(user) is None
    labelled = await bot.services.store.labelled_set("digits", validation_percent=0)
    assert [e.label for e in labelled.train if e.contributor == user] == ["2026"]
    # The question is answered: a later number is not taken as a correction.
    assert (await bot.say(user, "7"))[
        "text"
    ] == "Send me a photo of a digit or a flower. /help explains more."


async def test_the_thanks_for_a_typed_number_replies_to_the_answer_it_corrects(
    bot: BotHarness, number_2026: bytes
) -> None:
    user = bot.user(306)
    reply, _, _ = await press_wrong_on_a_number(bot, user, number_2026)
    thanks = await bot.say(user, "2027")
    assert thanks["text"] == "Thank you! Recorded: 2027."
    assert thanks["reply_to_message"]["message_id"] == reply["message_id"]  # which photo it went to


async def test_a_number_typed_in_full_width_or_grouped_digits_is_the_number(
    bot: BotHarness, number_2026: bytes
) -> None:
    """２０２６ (a Japanese keyboard), ٢٠٢٦ (an Arabic one), "2 026" or "+2026" got the photo hint."""
    for user, typed in zip((308, 309, 310, 311), ("２０２６", "٢٠٢٦", "2 026", "+2026"), strict=True):
        reply, _, _ = await press_wrong_on_a_number(bot, bot.user(user), number_2026)
        thanks = await bot.say(user, typed)
        assert thanks["text"].startswith("Thank you! Recorded: 2026"), (typed, thanks["text"])
        feedback = await bot.services.store.get_feedback(callbacks.decode(buttons(reply)[0][1]).prediction_id)
        assert feedback.true_label == "2026"


async def test_a_press_under_another_answer_ends_the_wait_for_a_typed_number(
    bot: BotHarness, number_2026: bytes, glyphs
) -> None:
    user = bot.user(307)
    reply, _, _ = await press_wrong_on_a_number(bot, user, number_2026)
    other = await bot.photo(user, digit_photo(glyphs[3], seed=4))
    await bot.press(user, other, buttons(other)[-1][1])  # ❌ Wrong or "Something else…"
    assert await bot.services.store.pending_correction(user) is None
    assert (await bot.say(user, "8"))["text"] == HINT  # not recorded for the 2026 photo
    assert await bot.services.store.get_feedback(callbacks.decode(buttons(reply)[0][1]).prediction_id) is None


async def test_a_single_digit_keeps_its_0_to_9_buttons(bot: BotHarness, glyphs) -> None:
    user = bot.user(302)
    await bot.say(user, "/digit")
    reply = await bot.photo(user, digit_photo(glyphs[4], seed=3))
    if "❌ Wrong" not in [t for t, _ in buttons(reply)]:
        pytest.fail(f"the test model was unsure of a clear 4: {reply['text']}")
    _, edited = await bot.press(user, reply, button_data(reply, "❌ Wrong"))
    assert [t for t, _ in buttons(edited)][:10] == [str(d) for d in range(10)]
    assert await bot.services.store.pending_correction(user) is None


async def test_a_number_correction_survives_a_restart(
    tmp_path: Path, model_dir: Path, number_2026: bytes
) -> None:
    first = await start_bot(tmp_path, model_dir)
    try:
        user = first.user(303)
        reply, _, _ = await press_wrong_on_a_number(first, user, number_2026)
        prediction_id = callbacks.decode(buttons(reply)[0][1]).prediction_id
    finally:
        await stop_bot(first)
    second = await start_bot(tmp_path, model_dir)  # the same data folder: the question is still open
    try:
        second.user(303)
        thanks = await second.say(303, "2026")
        assert thanks["text"].startswith("Thank you! Recorded: 2026")
        feedback = await second.services.store.get_feedback(prediction_id)
        assert feedback.true_label == "2026"
    finally:
        await stop_bot(second)


def figure(text: str, label: str) -> int:
    found = re.search(rf"^{re.escape(label)}: (\d+)", text, re.MULTILINE)
    assert found, text
    return int(found[1])


async def test_stats_admin_stats_and_forget_count_the_same_photos(bot: BotHarness, glyphs) -> None:
    user, admin = bot.user(304), bot.user(ADMIN_ID, "Root")
    before = figure((await bot.say(admin, "/stats"))["text"], "Photos people sent")
    same = digit_photo(glyphs[1], seed=40)
    for photo in (same, digit_photo(glyphs[2], seed=41), same):  # the same photo twice
        await bot.photo(user, photo)
    await bot.photo(user, digit_photo(glyphs[3], seed=42), caption="3")

    mine = (await bot.say(user, "/stats"))["text"]
    everyone = (await bot.say(admin, "/stats"))["text"]
    ask = await bot.say(user, "/forget")
    _, done = await bot.press(user, ask, button_data(ask, "Yes, delete"))

    assert mine.startswith("Photos you sent: 3 (the same photo sent twice counts once)\n")
    assert figure(everyone, "Photos people sent") - before == 3
    assert done["text"].startswith("Done: I deleted the photos you sent (3, as /stats counted them)")
    assert figure((await bot.say(admin, "/stats"))["text"], "Photos people sent") == before


async def test_models_after_a_rollback_says_where_each_version_stands(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    store = bot.services.model_store
    first = store.active("digits")
    why = "MNIST test 97.00% → 97.10% (no loss); no held-out chat photos to compare on"
    second = store.add_version(
        "digits",
        first.path,
        {**first.meta, "status": "promoted", "gate": {"promote": True, "reason": why, "scores": []}},
    )
    store.promote("digits", second.version)
    await bot.services.classifier.reload("digits")

    ask = await bot.say(admin, "/rollback digits")
    _, done = await bot.press(admin, ask, button_data(ask, "Yes, roll back"))
    assert done["text"] == f"digits now serves v{first.version}."
    lines = (await bot.say(admin, "/models"))["text"].splitlines()

    rolled = [line for line in lines if line.startswith(f"digits v{second.version} — ")]
    assert len(rolled) == 1 and re.fullmatch(
        rf"digits v{second.version} — not serving: rolled back to v{first.version} on "
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC",
        rolled[0],
    ), lines
    assert f"  Why promoted: {why}" in lines  # the decision of its retraining, as history
    assert f"digits v{first.version} — serving now" in lines
    assert not any(re.search(r"\bpromoted\b", line) for line in lines if line.startswith("digits v"))
    russian = bot.user(305, "Оля", "ru")
    assert (await bot.say(russian, "/models"))["text"] == "Извините, эта команда только для администраторов."


async def test_admin_help_lists_the_admin_commands_only_for_admins(bot: BotHarness) -> None:
    admin, person = bot.user(ADMIN_ID, "Root"), bot.user(306)
    admin_help = (await bot.say(admin, "/help"))["text"]
    assert "Admin commands:" in admin_help
    for command in ("/models", "/retrain MODEL [force]", "/rollback MODEL [version]", "/block USER_ID"):
        assert command in admin_help
    person_help = (await bot.say(person, "/help"))["text"]
    assert "Admin commands" not in person_help and "/rollback" not in person_help
    russian_admin = bot.user(SECOND_ADMIN, "Пётр", "ru")
    assert "Команды администратора:" in (await bot.say(russian_admin, "/help"))["text"]


async def test_rollback_asks_and_only_the_admin_who_asked_can_confirm(bot: BotHarness) -> None:
    admin, other_admin = bot.user(ADMIN_ID, "Root"), bot.user(SECOND_ADMIN, "Peter", "en")
    store = bot.services.model_store
    current = store.active("digits")
    newer = store.add_version("digits", current.path, {**current.meta, "command": "copy for the test"})
    store.promote("digits", newer.version)
    await bot.services.classifier.reload("digits")

    ask = await bot.say(admin, f"/rollback digits {current.version}")
    assert ask["text"] == (
        f"Roll digits back from v{newer.version} to v{current.version}? Every photo is then answered by "
        f"v{current.version}, at once and without a restart."
    )
    assert store.active_version("digits") == newer.version  # nothing happens before the press
    yes = button_data(ask, "Yes, roll back")
    decoy = await bot.say(other_admin, "/help")
    refused, _ = await bot.press(other_admin, decoy, yes, check=False, edited=False)
    assert refused["text"] == "Only the admin who asked for this rollback can confirm it."
    assert store.active_version("digits") == newer.version
    _, kept = await bot.press(admin, ask, button_data(ask, f"No, keep v{newer.version}"))
    assert kept["text"] == f"Nothing changed: digits v{newer.version} keeps serving."
    assert store.active_version("digits") == newer.version

    ask = await bot.say(admin, f"/rollback digits {current.version}")
    _, done = await bot.press(admin, ask, button_data(ask, "Yes, roll back"))
    assert done["text"] == f"digits now serves v{current.version}."
    assert store.active_version("digits") == current.version
    assert bot.services.classifier.models()["digits"].version == current.version
    _, again = await bot.press(admin, ask, yes, check=False)  # an old button: the version changed
    assert again["text"] == f"digits changed meanwhile (now v{current.version}). Send /rollback again."
    assert store.active_version("digits") == current.version


async def test_block_says_whether_the_bot_knows_the_id(bot: BotHarness, glyphs) -> None:
    admin, known = bot.user(ADMIN_ID, "Root"), bot.user(307)
    unknown = 4_040_404
    assert (await bot.say(admin, f"/block {unknown}"))["text"] == (
        f"I have no photos from user {unknown} yet. Blocked in advance: labels from this id will not be used."
    )
    assert await bot.services.store.is_blocked(unknown)  # an admin may block before the first photo
    await bot.photo(known, digit_photo(glyphs[5], seed=50))
    assert (await bot.say(admin, f"/block {known}"))[
        "text"
    ] == f"User {known} can no longer contribute labels."
    russian_admin = bot.user(SECOND_ADMIN, "Пётр", "ru")
    assert (await bot.say(russian_admin, "/block 4040405"))["text"].startswith(
        "От пользователя 4040405 у меня пока нет фото."
    )
