"""One user's flood of texts, commands, files, stickers and button presses costs a bounded number of replies,
and another user is answered meanwhile (USER_UPDATES_PER_MINUTE, checked before any handler works)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_asyncio

from inference.engine import EngineConfig
from tests.support.bot import (
    ADMIN_ID,
    BotHarness,
    Json,
    buttons,
    digit_photo,
    start_bot,
    stop_bot,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATES_PER_MINUTE = 8
ROOM = 2  # photos the classifier takes at once (ENGINE_QUEUE_SIZE)
BUSY = "I'm busy right now — please send the photo again in a moment."
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj <<>> endobj\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    harness = await start_bot(
        tmp_path_factory.mktemp("data"),
        model_dir,
        user_updates_per_minute=UPDATES_PER_MINUTE,
        user_photos_per_minute=5,
        engine=EngineConfig(queue_size=ROOM),
    )
    yield harness
    await stop_bot(harness)


def replies(bot: BotHarness, user: int, after: int = 0) -> list[Json]:
    """What the bot sent the user: messages and answers to button presses."""
    return [
        e
        for e in bot.server.chat(user).events[after:]
        if (e["type"] == "message" and e["message"]["from"]["is_bot"]) or e["type"] == "callback_answer"
    ]


def reply_text(event: Json) -> str:
    return event["message"]["text"] if event["type"] == "message" else event["text"]


async def settled(bot: BotHarness, user: int, expected: int) -> list[Json]:
    """The user's replies once `expected` have arrived, and whatever else came in a moment after."""
    await bot.server.wait_for(user, lambda e: len(replies(bot, user)) >= expected, timeout=60)
    await asyncio.sleep(0.5)  # anything more would arrive now
    return replies(bot, user)


async def test_a_flood_of_every_kind_of_update_gets_bounded_replies_while_another_user_is_answered(
    bot: BotHarness, glyphs
) -> None:
    flooder, other = bot.user(7001), bot.user(7002)
    anchor = await bot.say(flooder, "/help")  # a message to press buttons under; update 1 of the window
    for number in range(12):
        await bot.server.send_text(flooder, f"hello {number}")
        await bot.server.send_text(flooder, ("/help", "/stats", "/dance", "/retrain digits")[number % 4])
        await bot.server.send_document(
            flooder, PDF + bytes([number]), f"paper{number}.pdf", "application/pdf"
        )
        await bot.server.send_media(flooder, "sticker")
        await bot.server.press_button(flooder, anchor["message_id"], f"v:{number + 1}:y", check=False)
    served = await bot.photo(other, digit_photo(glyphs[2], size=(320, 240)))
    assert [t for t, _ in buttons(served)] == ["✅ Correct", "❌ Wrong"]

    got = await settled(bot, flooder, UPDATES_PER_MINUTE + 1)
    # 61 updates: one reply to each of the first UPDATES_PER_MINUTE, one "slow down", then nothing.
    assert len(got) == UPDATES_PER_MINUTE + 1, [reply_text(e) for e in got]
    notices = [e for e in got if reply_text(e).startswith("Slow down, please")]
    assert len(notices) == 1
    assert "Please wait " in reply_text(notices[0])
    assert await bot.services.store.user_predictions(flooder) == []


async def test_the_notice_is_russian_for_a_russian_user_and_admins_are_not_limited(bot: BotHarness) -> None:
    russian = bot.user(7003, "Оля", "ru")
    for _ in range(UPDATES_PER_MINUTE + 3):
        await bot.server.send_text(russian, "привет")
    got = await settled(bot, russian, UPDATES_PER_MINUTE + 1)
    assert len(got) == UPDATES_PER_MINUTE + 1
    assert reply_text(got[-1]).startswith("Помедленнее, пожалуйста")

    admin = bot.user(ADMIN_ID, "Root")
    for _ in range(UPDATES_PER_MINUTE + 3):
        await bot.server.send_text(admin, "/help")
    got = await settled(bot, admin, UPDATES_PER_MINUTE + 3)
    assert len(got) == UPDATES_PER_MINUTE + 3
    assert all(reply_text(e).startswith("Send me a photo") for e in got)


async def test_photos_beyond_the_classifier_s_room_are_told_busy_without_being_downloaded(
    bot: BotHarness, glyphs
) -> None:
    senders = [bot.user(7100 + number) for number in range(ROOM + 3)]
    photo = digit_photo(glyphs[5], size=(320, 240), seed=9)
    fetched = bot.server.method_calls.get("getFile", 0)
    bot.server.file_delay_s = 5.0  # the first downloads are still running when the others arrive
    try:
        for user in senders:
            await bot.server.send_photo(user, photo)
        first = [await bot.next_message(user, 0, timeout=60) for user in senders]
        busy = [
            m for m in first if m["text"] == "I'm busy right now — please send the photo again in a moment."
        ]
        assert len(busy) == len(senders) - ROOM
        assert bot.server.method_calls.get("getFile", 0) - fetched == ROOM  # the busy ones: not fetched
    finally:
        bot.server.file_delay_s = 0.0
    answered = [m for m in first if buttons(m)]
    assert len(answered) == ROOM
