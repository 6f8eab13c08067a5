"""Two bot processes on one database behind one webhook behave as one bot; a restarted bot goes on where
the last one stopped.

Each replica is the whole bot (its own services, engine and connections); the local Bot API server
delivers every update to a load balancer that hands it to one of them (tests/support/replicas.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_asyncio

from bot.texts import text
from tests.support.bot import ADMIN_ID, BotHarness, Json, button_data, buttons, digit_photo
from tests.support.replicas import Replicas

pytestmark = pytest.mark.asyncio(loop_scope="module")
UPDATES_PER_MINUTE = 6
PHOTOS_PER_MINUTE = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    running = await Replicas.start(
        tmp_path_factory.mktemp("data"),
        model_dir,
        user_updates_per_minute=UPDATES_PER_MINUTE,
        user_photos_per_minute=PHOTOS_PER_MINUTE,
    )
    yield running
    await running.stop()


def bot_messages(bot: BotHarness, user: int, after: int = 0) -> list[Json]:
    return [
        e["message"]
        for e in bot.server.chat(user).events[after:]
        if e["type"] == "message" and e["message"]["from"]["is_bot"]
    ]


async def settled(bot: BotHarness, user: int, expected: int, after: int = 0) -> list[Json]:
    """The bot's messages to `user` once `expected` have arrived, and whatever came a moment after."""
    await bot.server.wait_for(
        user, lambda e: len(bot_messages(bot, user, after)) >= expected, after=after, timeout=60
    )
    await asyncio.sleep(0.5)
    return bot_messages(bot, user, after)


async def test_a_users_flood_is_limited_once_across_both_replicas(replicas: Replicas) -> None:
    replicas.round_robin()
    bot = replicas.bot(0)
    flooder = bot.user(8001)
    first = len(replicas.delivered)
    for number in range(3 * UPDATES_PER_MINUTE):
        await bot.server.send_text(flooder, f"hello {number}")
    got = await settled(bot, flooder, UPDATES_PER_MINUTE + 1)
    assert set(replicas.delivered[first:]) == {0, 1}  # both took their share
    assert len(got) == UPDATES_PER_MINUTE + 1, [m["text"] for m in got]  # one limit, not one each
    assert [m["text"].startswith("Slow down, please") for m in got].count(True) == 1


async def test_a_users_photos_count_against_one_limit_on_both_replicas(replicas: Replicas, glyphs) -> None:
    replicas.round_robin()
    bot = replicas.bot(0)
    sender = bot.user(8002)
    for number in range(PHOTOS_PER_MINUTE + 2):
        await bot.server.send_photo(sender, digit_photo(glyphs[number], size=(320, 240), seed=number))
    got = await settled(bot, sender, PHOTOS_PER_MINUTE + 1)
    assert len([m for m in got if buttons(m)]) == PHOTOS_PER_MINUTE, [m["text"] for m in got]
    notices = [m["text"] for m in got if not buttons(m)]
    assert len(notices) == 1 and notices[0].startswith("You're sending photos faster than I can look")
    assert len(await bot.services.store.user_predictions(sender)) == PHOTOS_PER_MINUTE


async def test_forget_asked_on_one_replica_is_confirmed_on_the_other(replicas: Replicas, glyphs) -> None:
    user = replicas.to(0).user(8003)
    answer = await replicas.to(0).photo(user, digit_photo(glyphs[4], size=(320, 240)))
    assert buttons(answer)
    question = await replicas.to(0).say(user, "/forget")
    other = replicas.to(1)
    _, edited = await other.press(user, question, button_data(question, text("en", "forget_yes")))
    assert edited is not None and edited["text"].startswith(text("en", "forget_done", photos=1))
    assert await other.services.store.user_predictions(user) == []
    assert await replicas.bot(0).services.store.user_predictions(user) == []


async def test_a_chat_mode_set_on_one_replica_is_the_others_mode_at_once(replicas: Replicas, glyphs) -> None:
    user = replicas.to(1).user(8004)
    assert buttons(await replicas.to(1).photo(user, digit_photo(glyphs[3], size=(320, 240))))  # auto
    assert (await replicas.to(0).say(user, "/flower"))["text"].startswith("Mode: flowers")
    reply = await replicas.to(1).photo(user, digit_photo(glyphs[3], size=(320, 240), seed=1))
    assert reply["text"] == "My flowers model is not available right now. Please try again later."


async def test_a_model_made_on_one_replica_is_taught_and_deleted_through_the_other(
    replicas: Replicas, glyphs
) -> None:
    admin, ann = replicas.bot(0).user(ADMIN_ID, "Root"), replicas.bot(0).user(8005)
    made = await replicas.to(0).say(admin, "/newmodel pets dog cat")
    assert made["text"] == text(
        "en", "newmodel_done", model="pets", labels="dog, cat", example="dog", minimum=10
    )
    taught = await replicas.to(1).photo(ann, digit_photo(glyphs[1], size=(320, 240)), caption="dog")
    assert taught["text"].endswith(text("en", "teach_count", label="dog", count=1, minimum=10)), taught[
        "text"
    ]

    question = await replicas.to(0).say(admin, "/delmodel pets")
    _, edited = await replicas.to(1).press(
        admin, question, button_data(question, text("en", "delmodel_yes", model="pets"))
    )
    assert edited is not None and edited["text"] == text("en", "delmodel_done", model="pets")
    late = await replicas.to(0).photo(ann, digit_photo(glyphs[1], size=(320, 240), seed=2), caption="dog")
    assert text("en", "contribution_unknown_label", caption="dog") in late["text"]
    assert (
        "pets" not in replicas.bot(0).services.catalogue and "pets" not in replicas.bot(1).services.catalogue
    )


async def test_a_restarted_bot_goes_on_where_the_last_one_stopped(
    tmp_path: Path, model_dir: Path, glyphs
) -> None:
    """One replica at a time: what the first was keeping for its users, the next one has."""
    replicas = await Replicas.start(
        tmp_path / "data", model_dir, count=2, running=(0,), user_updates_per_minute=UPDATES_PER_MINUTE
    )
    try:
        first = replicas.to(0)
        user, flooder = first.user(8101), first.user(8102)
        assert (await first.say(user, "/flower"))["text"].startswith("Mode: flowers")
        question = await first.say(user, "/forget")
        for number in range(UPDATES_PER_MINUTE - 1):
            await first.server.send_text(flooder, f"hello {number}")
        assert len(await settled(first, flooder, UPDATES_PER_MINUTE - 1)) == UPDATES_PER_MINUTE - 1
        await replicas.stop_replica(0)

        await replicas.start_replica(1)
        second = replicas.to(1)
        mark = second.server.chat(flooder).revision
        for number in range(3):  # the last one of the window, then over the limit, then dropped
            await second.server.send_text(flooder, f"again {number}")
        got = await settled(second, flooder, 2, after=mark)
        assert [m["text"].startswith("Slow down, please") for m in got] == [False, True], got
        reply = await second.photo(user, digit_photo(glyphs[8], size=(320, 240)))
        assert reply["text"] == "My flowers model is not available right now. Please try again later."
        _, edited = await second.press(user, question, button_data(question, text("en", "forget_yes")))
        assert edited is not None and edited["text"].startswith(text("en", "forget_done", photos=0))
        assert await second.services.store.chat_mode(user) == "auto"  # the mode went with everything else
    finally:
        await replicas.stop()
