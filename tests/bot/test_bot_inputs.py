"""Bad input, end to end: each gets a clear reply, the bot keeps running, nothing is stored.
Also the per-user flood limit: one user's flood does not hold up anyone else."""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
import struct
import time
import zlib
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.handlers.photos import MIN_SIDE
from bot.playground.bot_api_server import BotApiError
from bot.texts import text
from tests.support.bot import (
    ADMIN_ID,
    BotHarness,
    asks_feedback,
    buttons,
    digit_photo,
    encoded,
    start_bot,
    stop_bot,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
FLOOD_LIMIT = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    harness = await start_bot(
        tmp_path_factory.mktemp("data"),
        model_dir,
        user_photos_per_minute=FLOOD_LIMIT,
        max_image_pixels=40_000_000,
    )
    yield harness
    await stop_bot(harness)


_next_user = iter(range(3000, 4000))


def fresh_user(bot: BotHarness) -> int:
    return bot.user(next(_next_user))


def stored_files(bot: BotHarness) -> int:
    return sum(1 for p in bot.settings.images_dir.rglob("*") if p.is_file() and ".tmp" not in p.parts)


async def assert_nothing_stored(bot: BotHarness, user: int, files_before: int) -> None:
    assert await bot.services.store.user_predictions(user) == []
    assert stored_files(bot) == files_before


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` × `height` pixels: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "name", "mime", "reply"),
    [
        (
            b"%PDF-1.4\n%\xe2\xe3\n1 0 obj <<>> endobj\n",
            "paper.pdf",
            "application/pdf",
            "“paper.pdf” is not an image.",
        ),
        (b"just some notes\n", "notes.txt", "text/plain", "“notes.txt” is not an image."),
        (
            b"MZ\x90\x00\x03" + b"\0" * 200,
            "setup.exe",
            "application/x-msdownload",
            "“setup.exe” is not an image.",
        ),
        (b"MZ\x90\x00\x03" + b"\0" * 200, "setup", None, "“setup” is not an image."),
    ],
)
async def test_non_image_documents_are_refused(
    bot: BotHarness, data: bytes, name: str, mime: str, reply: str
) -> None:
    user, before = fresh_user(bot), stored_files(bot)
    answer = await bot.document(user, data, name, mime)
    assert answer["text"].startswith(reply)
    await assert_nothing_stored(bot, user, before)


def _jpeg(glyphs) -> bytes:
    return digit_photo(glyphs[5], size=(400, 300))


def _png() -> bytes:
    return encoded(Image.new("RGB", (300, 200), "white"), "PNG")


@pytest.mark.parametrize(
    ("make", "name", "mime", "expected"),
    [
        (
            lambda g: _jpeg(g)[: len(_jpeg(g)) // 2],
            "half.jpg",
            "image/jpeg",
            "I can't read this image: the image is damaged",
        ),
        (lambda g: _png()[:60], "cut.png", "image/png", "I can't read this image:"),
        (
            lambda g: b"\xff\xd8\xff\xe0" + b"\x13" * 500,
            "noise.jpg",
            "image/jpeg",
            "I can't read this image:",
        ),
        (lambda g: b"GIF89a" + b"\x00" * 5, "broken.gif", "image/gif", "I can't read this image:"),
        (
            lambda g: b"pretending to be a jpeg",
            "fake.jpg",
            "image/jpeg",
            "I can't read this image: this is not an image",
        ),
        (
            lambda g: png_claiming(100_000, 100_000),
            "bomb.png",
            "image/png",
            "This image is too large for me:",
        ),
        (
            lambda g: encoded(Image.new("RGB", (4000, 40), "white"), "PNG"),
            "strip.png",
            "image/png",
            "I can't read this image: the image is 4000×40: too long and narrow",
        ),
        (
            lambda g: encoded(Image.new("RGB", (4, 4), "white"), "PNG"),
            "dot.png",
            "image/png",
            "I can't read this image:",
        ),
    ],
    ids=[
        "truncated-jpeg",
        "truncated-png",
        "corrupt-jpeg",
        "corrupt-gif",
        "not-an-image",
        "bomb",
        "aspect",
        "tiny",
    ],
)
async def test_broken_images_sent_as_files_get_a_clear_reply(
    bot: BotHarness, glyphs, make, name, mime, expected
) -> None:
    user, before = fresh_user(bot), stored_files(bot)
    answer = await bot.document(user, make(glyphs), name, mime)
    assert answer["text"].startswith(expected), answer["text"]
    assert "reply_markup" not in answer
    await assert_nothing_stored(bot, user, before)


async def test_a_truncated_jpeg_sent_as_a_photo_gets_a_clear_reply(bot: BotHarness, glyphs) -> None:
    user, before = fresh_user(bot), stored_files(bot)
    data = _jpeg(glyphs)
    after = bot.server.chat(user).revision
    await bot.server.send_photo(user, data[: len(data) // 2], as_is=True)
    answer = await bot.next_message(user, after)
    assert answer["text"].startswith("I can't read this image: the image is damaged or truncated")
    await assert_nothing_stored(bot, user, before)


async def test_files_over_twenty_megabytes_are_refused_without_downloading(bot: BotHarness) -> None:
    user, before = fresh_user(bot), stored_files(bot)
    calls = bot.server.method_calls.get("getFile", 0)
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 1024 * 1024)
    answer = await bot.document(user, data, "huge.png", "image/png")
    assert answer["text"] == "This file is too large (21.0 MB). I read images up to 20.0 MB."
    assert bot.server.method_calls.get("getFile", 0) == calls
    await assert_nothing_stored(bot, user, before)


async def test_a_file_whose_size_is_unknown_is_refused_by_the_server_limit(bot: BotHarness) -> None:
    user, before = fresh_user(bot), stored_files(bot)
    after = bot.server.chat(user).revision
    message = await bot.server.send_document(user, b"\0" * (20 * 1024 * 1024 + 10), "big.png", "image/png")
    assert message["document"]["file_size"] > 20 * 1024 * 1024
    answer = await bot.next_message(user, after)
    assert answer["text"].startswith("This file is too large")
    await assert_nothing_stored(bot, user, before)


async def test_animated_gif_and_webp_are_read_by_their_first_frame(bot: BotHarness, glyphs) -> None:
    """Our choice: an animation sent as a file is answered by its first frame (a GIF *animation* message
    — Telegram's own type for GIFs — is refused like a video)."""
    user = fresh_user(bot)
    first = Image.open(io.BytesIO(digit_photo(glyphs[7], size=(320, 240)))).convert("RGB")
    second = Image.new("RGB", first.size, "black")
    for fmt, name, mime in (("GIF", "seven.gif", "image/gif"), ("WEBP", "seven.webp", "image/webp")):
        data = encoded(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
        answer = await bot.document(user, data, name, mime)
        assert asks_feedback(answer), answer["text"]
    still = await bot.photo(user, digit_photo(glyphs[7], size=(320, 240)))
    assert still["text"].splitlines()[0].split(" — ")[0] == answer["text"].splitlines()[0].split(" — ")[0]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sticker", "Stickers are fun, but I read photos only."),
        ("video", "I read still photos only, not videos or animations."),
        ("animation", "I read still photos only, not videos or animations."),
        ("video_note", "I read still photos only, not videos or animations."),
        ("voice", "I can't listen, I only look: send a photo."),
        ("audio", "I can't listen, I only look: send a photo."),
        ("location", "Send me a photo of a digit or a flower."),
        ("contact", "Send me a photo of a digit or a flower."),
        ("dice", "Send me a photo of a digit or a flower."),
    ],
)
async def test_media_that_are_not_photos_get_a_clear_reply(bot: BotHarness, kind: str, expected: str) -> None:
    user, before = fresh_user(bot), stored_files(bot)
    after = bot.server.chat(user).revision
    await bot.server.send_media(user, kind)
    answer = await bot.next_message(user, after)
    assert answer["text"].startswith(expected)
    await assert_nothing_stored(bot, user, before)


async def test_plain_text_and_unknown_commands_get_a_hint(bot: BotHarness) -> None:
    user = fresh_user(bot)
    assert (await bot.say(user, "hello bot"))[
        "text"
    ] == "Send me a photo of a digit or a flower. /help explains more."
    assert (await bot.say(user, "/dance"))[
        "text"
    ] == "I don't know that command. /help lists what I understand."
    russian = bot.user(3999, "Оля", "ru")
    assert (await bot.say(russian, "привет"))["text"].startswith("Пришлите мне фото")


async def test_the_bot_keeps_answering_after_bad_input(bot: BotHarness, glyphs) -> None:
    user = fresh_user(bot)
    await bot.document(user, png_claiming(100_000, 100_000), "bomb.png", "image/png")
    answer = await bot.photo(user, digit_photo(glyphs[1]))
    assert asks_feedback(answer)


async def test_a_flood_from_one_user_is_limited_politely_while_another_is_served(
    bot: BotHarness, glyphs
) -> None:
    flooder, other = fresh_user(bot), fresh_user(bot)
    photo = digit_photo(glyphs[4], size=(320, 240))
    after = bot.server.chat(flooder).revision
    for _ in range(FLOOD_LIMIT + 5):
        await bot.server.send_photo(flooder, photo)
    served = await bot.photo(other, digit_photo(glyphs[2], size=(320, 240)))
    assert asks_feedback(served)

    def bot_messages() -> list[dict]:
        events = bot.server.chat(flooder).events[after:]
        return [e["message"] for e in events if e["type"] == "message" and e["message"]["from"]["is_bot"]]

    for _ in range(200):
        if len(bot_messages()) >= FLOOD_LIMIT + 1:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # anything more would arrive now
    messages = bot_messages()
    answers = [m for m in messages if buttons(m)]
    notices = [m for m in messages if not buttons(m)]
    assert len(answers) == FLOOD_LIMIT
    assert len(notices) == 1  # told once, not once per photo
    assert notices[0]["text"].startswith("You're sending photos faster than I can look. Please wait ")
    assert len(await bot.services.store.user_predictions(flooder)) == FLOOD_LIMIT


async def test_one_slow_photo_does_not_hold_up_another_user(bot: BotHarness, glyphs) -> None:
    slow, quick = fresh_user(bot), fresh_user(bot)
    sent = await bot.server.send_photo(slow, digit_photo(glyphs[6], size=(640, 480), seed=77))
    chosen = next(
        p for p in sent["photo"] if min(p["width"], p["height"]) >= MIN_SIDE
    )  # what the bot fetches
    path = bot.server.files[chosen["file_id"]].file_path
    release = bot.server.file_holds[path] = asyncio.Event()  # this user's download hangs until released
    try:
        answer = await bot.photo(quick, digit_photo(glyphs[1], size=(640, 480), seed=78), timeout=8.0)
        assert asks_feedback(answer)
        assert not [
            e
            for e in bot.server.chat(slow).events
            if e["type"] == "message" and e["message"]["from"]["is_bot"]
        ]
        release.set()
        late = await bot.next_message(slow, 0, timeout=20)
        assert asks_feedback(late)
    finally:
        release.set()
        bot.server.file_holds.pop(path, None)


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("/block ²", "Usage: /block <user id>"),
        ("/unblock ٣", "Usage: /unblock <user id>"),
        ("/block 1234567890123456789", "Usage: /block <user id>"),  # 19 digits: past SQLite's integers
        ("/block 99999999999999999999999", "Usage: /block <user id>"),
        ("/rollback digits ²", "Usage: /rollback MODEL [version] — MODEL is one of: digits."),
        (
            "/rollback digits 12345678901234567890",
            "Usage: /rollback MODEL [version] — MODEL is one of: digits.",
        ),
    ],
)
async def test_ids_that_are_not_short_ascii_numbers_get_the_usage_not_a_crash(
    bot: BotHarness, command: str, usage: str
) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    assert (await bot.say(admin, command))["text"] == usage


async def test_an_eighteen_digit_id_is_accepted(bot: BotHarness) -> None:
    admin = bot.user(ADMIN_ID, "Root")
    user_id = 10**18 - 1
    assert (await bot.say(admin, f"/block {user_id}"))["text"] == (
        f"I have no photos from user {user_id} yet. Blocked in advance: labels from this id will not be used."
    )
    assert await bot.services.store.is_blocked(user_id)
    assert (await bot.say(admin, f"/unblock {user_id}"))["text"].startswith(f"User {user_id} ")
    assert not await bot.services.store.is_blocked(user_id)


async def test_a_non_admin_command_is_logged_by_name_without_its_text(
    bot: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    user = fresh_user(bot)
    with caplog.at_level(logging.INFO):
        answer = await bot.say(user, "/retrain digits my-password-123 and a long story")
    assert answer["text"] == "Sorry, this command is for admins only."
    tried = [r.getMessage() for r in caplog.records if "tried" in r.getMessage()]
    assert tried == [f"Non-admin user {user} tried /retrain"]
    assert not [r for r in caplog.records if "my-password-123" in r.getMessage()]


async def test_a_large_image_reaches_the_decode_processes_as_a_file_not_through_their_pipe(
    bot: BotHarness, glyphs
) -> None:
    user = fresh_user(bot)
    photo = Image.open(io.BytesIO(digit_photo(glyphs[3], size=(1600, 1200), seed=41)))
    data = encoded(photo, "PNG")
    assert len(data) > 500_000
    pool = bot.services.classifier._pool  # the decode processes: what crossed their pipes
    before = pool.sent_bytes
    answer = await bot.document(user, data, "three.png", "image/png")
    assert asks_feedback(answer), answer["text"]
    assert pool.sent_bytes - before < 10_000  # a path and a few settings, not the file
    assert bot.services.images.leftover_temp_files() == []  # the photo's own file is gone again


async def test_a_photo_posted_in_a_channel_is_left_alone(
    bot: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel's post has no sender: the photo handler used to fail on the missing user and post
    "something went wrong" into the channel."""
    channel = {"id": -1001234567890, "type": "channel", "title": "News"}
    sizes = [{"file_id": "channel-photo", "file_unique_id": "channel-photo", "width": 640, "height": 480}]
    user = fresh_user(bot)
    with caplog.at_level(logging.INFO, logger="bot"):
        await bot.server.push_update(
            {"channel_post": {"message_id": 1, "date": int(time.time()), "chat": channel, "photo": sizes}}
        )
        # Handled before the later update from a person gets its answer (each runs until it awaits).
        assert (await bot.say(user, "/help"))["text"].startswith("Send me a photo")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_photo_deleted_before_its_answer_still_gets_the_answer(bot: BotHarness, glyphs) -> None:
    """The answer quotes the photo; one the person deleted meanwhile is answered without the quote (it was
    "Something went wrong", and sending the photo again stored its label twice)."""
    user = fresh_user(bot)
    sent = await bot.server.send_photo(user, digit_photo(glyphs[3], seed=91), "3")
    chosen = next(p for p in sent["photo"] if min(p["width"], p["height"]) >= MIN_SIDE)
    path = bot.server.files[chosen["file_id"]].file_path
    release = bot.server.file_holds[path] = asyncio.Event()
    try:
        await asyncio.sleep(0.3)  # the bot is fetching it
        del bot.server.chat(user).messages[sent["message_id"]]  # the person deletes the photo
        release.set()
        answer = await bot.next_message(user, 0, timeout=20)
    finally:
        release.set()
        bot.server.file_holds.pop(path, None)
    assert "You labelled it 3" in answer["text"], answer["text"]
    assert "reply_to_message" not in answer
    assert [p.label for p in await bot.services.store.user_predictions(user)] == ["3"]


async def test_a_bot_api_server_error_is_asked_again_and_a_lasting_one_is_said(
    bot: BotHarness, glyphs
) -> None:
    """One 5xx of Telegram's (a restart, a gateway) costs no photo and no answer: the call is made again.
    A download that keeps failing is said, so the person sends the photo again (it was silence, and a
    captioned photo's label was lost)."""
    server, user = bot.server, fresh_user(bot)
    server.next_failures["getFile"] = [BotApiError("Internal Server Error", 500)]
    server.next_failures["sendMessage"] = [BotApiError("Bad Gateway", 502)]
    answer = await bot.photo(user, digit_photo(glyphs[4], seed=92), "4")
    assert "You labelled it 4" in answer["text"], answer["text"]
    assert server.next_failures == {"getFile": [], "sendMessage": []}  # each failed once, then went through

    server.failing_methods["getFile"] = BotApiError("Bad Gateway", 502)
    try:
        said = await bot.photo(user, digit_photo(glyphs[5], seed=93), "5")
    finally:
        del server.failing_methods["getFile"]
    assert said["text"] == text("en", "download_failed")
    assert len(await bot.services.store.user_predictions(user)) == 1


async def test_an_edited_caption_replaces_the_photos_label_and_one_edited_away_takes_it_back(
    bot: BotHarness, glyphs
) -> None:
    """The bot answers an edited photo again; the label it then says it stored is the one stored (it
    kept the first caption's and said it stored the new one)."""
    user = fresh_user(bot)
    sent = await bot.server.send_photo(user, digit_photo(glyphs[7], seed=94), "7")
    first = await bot.next_message(user, 0)
    assert "You labelled it 7" in first["text"], first["text"]
    (photo,) = [
        e.sha256
        for e in (await bot.services.store.labelled_set("digits")).examples
        if e.label == "7" and e.sha256 in await _hashes_of(bot, user)
    ]

    async def edit(caption: str) -> dict:
        after = bot.server.chat(user).revision
        edited = {**sent, "caption": caption, "edit_date": int(time.time())}
        await bot.server.push_update({"edited_message": edited})
        return await bot.next_message(user, after)

    assert "You labelled it 1" in (await edit("1"))["text"]
    assert await _labels_of(bot, photo) == ["1"]
    unlabelled = await edit("my seven")  # no label: the answer asks, as for any photo
    assert asks_feedback(unlabelled) and "labelled" not in unlabelled["text"], unlabelled["text"]
    assert await _labels_of(bot, photo) == []


async def _hashes_of(bot: BotHarness, user: int) -> set[str]:
    return {p.photo_sha256 for p in await bot.services.store.user_predictions(user)}


async def _labels_of(bot: BotHarness, sha256: str) -> list[str]:
    return [e.label for e in (await bot.services.store.labelled_set("digits")).examples if e.sha256 == sha256]


async def test_a_person_who_blocked_the_bot_is_no_error(
    bot: BotHarness, glyphs, caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram answers 403 to a reply to someone who blocked the bot: nobody to tell, nothing broken (it
    was logged as an ERROR with its traceback, once per update)."""
    user = fresh_user(bot)
    bot.server.failing_methods["sendMessage"] = BotApiError("Forbidden: bot was blocked by the user", 403)
    try:
        with caplog.at_level(logging.INFO):
            await bot.server.send_photo(user, digit_photo(glyphs[2], seed=95))
            for _ in range(100):
                if any("bot was blocked" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.1)
    finally:
        del bot.server.failing_methods["sendMessage"]
    assert any(r.levelno == logging.INFO and "bot was blocked" in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(await bot.services.store.user_predictions(user)) == 1  # the answer is kept


@pytest.mark.slow  # holds the database's write lock past its 10 s busy timeout
async def test_a_write_the_database_fails_asks_the_person_to_send_it_again(bot: BotHarness, glyphs) -> None:
    """Another process held the write lock too long: the labelled photo was not stored and the person
    read "Something went wrong on my side", with two tracebacks in the log."""
    user = fresh_user(bot)
    holder = sqlite3.connect(bot.settings.database_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        answer = await bot.photo(user, digit_photo(glyphs[8], seed=96), "8", timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer["text"] == text("en", "database_busy")
    again = await bot.photo(user, digit_photo(glyphs[8], seed=96), "8")
    assert "You labelled it 8" in again["text"], again["text"]
