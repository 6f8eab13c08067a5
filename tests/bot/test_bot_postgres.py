"""The real bot with DATABASE_URL on a PostgreSQL server: a photo answered and rated, /stats, a chat's
mode, the admin's /stats and /forget — every query the bot makes for them runs on PostgreSQL, with a
Telegram user id above 2^31."""

from __future__ import annotations

from pathlib import Path

from tests.support.bot import ADMIN_ID, button_data, buttons, digit_photo, start_bot, stop_bot
from tests.support.storage import rows

USER_ID = 7_300_000_123  # Telegram ids exceed 32 bits


async def test_the_bot_answers_rates_counts_and_forgets_on_postgresql(
    tmp_path: Path, model_dir: Path, glyphs, postgres_url: str
) -> None:
    bot = await start_bot(tmp_path / "data", model_dir, database_url=postgres_url)
    try:
        user, admin = bot.user(USER_ID), bot.user(ADMIN_ID, "Root")
        await bot.say(user, "/digit")
        reply = await bot.photo(user, digit_photo(glyphs[7], seed=1))
        assert [t for t, _ in buttons(reply)] == ["✅ Correct", "❌ Wrong"], reply["text"]
        await bot.press(user, reply, button_data(reply, "✅ Correct"))

        stats = await bot.say(user, "/stats")
        assert stats["text"] == (
            "Photos you sent: 1 (the same photo sent twice counts once)\n"
            "Answers you rated: 1\nRight: 1 (100%)\nPhotos you labelled with a caption: 0"
        )
        assert rows(postgres_url, "SELECT id, mode FROM chats") == [(USER_ID, "digit")]
        assert rows(postgres_url, "SELECT user_id, verdict FROM feedback") == [(USER_ID, "correct")]
        assert (await bot.say(admin, "/stats"))["text"].endswith(
            "Photos people sent: 1 (each person's distinct photos)\nAnswers given: 1\n"
            "Feedback: 1 (right 100%)\nPhotos labelled with a caption: 0\nBlocked users: 0"
        )
        assert not (tmp_path / "data" / "photobot.sqlite3").exists()

        ask = await bot.say(user, "/forget")
        _, done = await bot.press(user, ask, button_data(ask, "Yes, delete"))
        assert done["text"].startswith("Done: I deleted the photos you sent (1, as /stats counted them)")
        assert rows(postgres_url, "SELECT count(*) FROM predictions WHERE user_id = ?", (USER_ID,)) == [(0,)]
    finally:
        await stop_bot(bot)
