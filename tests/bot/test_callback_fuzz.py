"""Fuzzing callback data: anyone can send any button data, so no string may crash the decoder or a handler.

Seeded and bounded: thousands of mutated and random strings through `callbacks.decode`, then a few hundred
forged presses through the real bot, which must answer every one of them and keep answering photos.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot import callbacks
from bot.texts import TEXTS
from tests.support.bot import (
    BotHarness,
    asks_feedback,
    buttons,
    digit_photo,
    start_bot,
    stop_bot,
)

SEED = 2026_12_06
STRINGS = 5000
PRESSES = 300
LARGEST_ID = 10**callbacks.MAX_ID_DIGITS - 1
# What a crafted client would try: separators, flags, digits that are not ASCII, whitespace, long numbers.
ALPHABET = [*"vlbfyn:0123456789_-aZ/.é²٣\n\t \x00🙂", "9" * 19, "0" * 5, "::", "roses"]
VALID = [
    callbacks.encode(data)
    for data in (
        callbacks.Verdict(1, True),
        callbacks.Verdict(LARGEST_ID, False),
        callbacks.LabelChoice(42, "sunflowers"),
        callbacks.LabelChoice(42, None),
        callbacks.BackToVerdict(7),
        callbacks.ForgetChoice(123456789, True),
    )
]


def mutated(rng: random.Random, count: int, seeds: list[str] = VALID) -> Iterator[str]:
    """`count` strings: valid data with characters replaced, inserted, deleted or spliced, and noise."""
    for _ in range(count):
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            match rng.randrange(5):
                case 0:
                    text = text[:at] + rng.choice(ALPHABET) + text[at + 1 :]
                case 1:
                    text = text[:at] + rng.choice(ALPHABET) + text[at:]
                case 2:
                    text = text[:at] + text[at + 1 :]
                case 3:
                    text = text[:at] + rng.choice(seeds)[at:]
                case _:
                    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24)))
        yield text


def test_mutated_and_random_callback_data_decode_exactly_or_raise_malformed() -> None:
    rng = random.Random(SEED)
    decoded = refused = 0
    for text in mutated(rng, STRINGS):
        try:
            data = callbacks.decode(text)
        except callbacks.MalformedCallback:
            refused += 1
            continue
        decoded += 1
        # What decodes is exactly what this bot writes: it encodes back to the same string, ids fit.
        assert callbacks.encode(data) == text
        number = data.user_id if isinstance(data, callbacks.ForgetChoice) else data.prediction_id
        assert 1 <= number <= LARGEST_ID
    assert decoded > 100 and refused > 1000  # both paths were really exercised


# ------------------------------------------------------------------------------- through the bot


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    # The subject here is crashes, not floods: the per-user limits are off.
    harness = await start_bot(
        tmp_path_factory.mktemp("data"), model_dir, user_photos_per_minute=0, user_updates_per_minute=0
    )
    yield harness
    await stop_bot(harness)


@pytest.mark.asyncio(loop_scope="module")
async def test_forged_presses_never_crash_a_handler_and_the_bot_keeps_answering(
    bot: BotHarness, glyphs
) -> None:
    owner, stranger = bot.user(5001), bot.user(5002)
    answer = await bot.photo(owner, digit_photo(glyphs[3], size=(320, 240)))
    real = [data for _, data in buttons(answer)]
    anchor = await bot.say(stranger, "/help")
    seeds = [*VALID, *real, f"v:{10**18}:y", f"b:{2**63}", "v:9223372036854775807:n"]
    rng = random.Random(SEED + 1)
    forged = [*seeds, *mutated(rng, PRESSES * 2, seeds)]  # the seeds themselves too: 2**63 overflows SQLite
    presses = [d for d in forged if d and len(d.encode()) <= 64][:PRESSES]
    assert len(presses) == PRESSES
    sent = {owner: 0, stranger: 0}
    for number, data in enumerate(presses):
        user, message = (owner, answer) if number % 2 else (stranger, anchor)
        await bot.server.press_button(user, message["message_id"], data, check=False)
        sent[user] += 1
    for user, count in sent.items():
        answers = await _callback_answers(bot, user, count)
        assert len(answers) == count  # every press answered, none dropped by a crash
        assert TEXTS["en"]["internal_error"] not in answers
    later = await bot.photo(stranger, digit_photo(glyphs[8], size=(320, 240), seed=5))
    assert asks_feedback(later)


async def _callback_answers(bot: BotHarness, user: int, count: int) -> list[str]:
    """The texts of the first `count` callback answers in the user's chat, waiting for them to arrive."""

    def answers() -> list[str]:
        return [e["text"] for e in bot.server.chat(user).events if e["type"] == "callback_answer"]

    await bot.server.wait_for(
        user,
        lambda e: len(answers()) >= count,
        timeout=120,
    )
    return answers()
