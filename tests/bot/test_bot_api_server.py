"""The local Bot API server against python-telegram-bot's own client: shapes, errors, limits, polling."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Conflict, InvalidToken

from bot.playground.bot_api_server import BotApiServer

TOKEN = "4242:test-secret"


def jpeg(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
async def server():
    async with BotApiServer(TOKEN) as running:
        running.add_user(1001, "Ann", language_code="en")
        yield running


@pytest.fixture
async def bot(server: BotApiServer):
    client = Bot(TOKEN, base_url=f"{server.url}/bot", base_file_url=f"{server.url}/file/bot")
    async with client:
        yield client


async def test_get_me_describes_the_bot_and_a_wrong_token_is_refused(server: BotApiServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.first_name) == (4242, True, "PhotoBot")
    stranger = Bot("4242:wrong", base_url=f"{server.url}/bot")
    with pytest.raises(InvalidToken):
        await stranger.get_me()


async def test_unknown_method_is_a_400_in_telegrams_shape(server: BotApiServer, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)method senddice not found"):
        await bot._post("sendDice", {"chat_id": 1001})
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/bot{TOKEN}/sendDice") as response:
        body = await response.json()
    assert response.status == 400
    assert body == {"ok": False, "error_code": 400, "description": "Bad Request: method sendDice not found"}


async def test_long_polling_waits_for_an_update_and_offsets_acknowledge(
    server: BotApiServer, bot: Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    assert not poll.done()  # nothing to deliver yet: the request is held open
    sent = await server.send_text(1001, "/start")
    updates = await asyncio.wait_for(poll, 5)
    assert [u.message.text for u in updates] == ["/start"]
    assert updates[0].message.entities[0].type == "bot_command"
    first_id = updates[0].update_id

    await server.send_text(1001, "hello")
    again = await bot.get_updates(timeout=0)  # not acknowledged yet: both are still there
    assert [u.update_id for u in again] == [first_id, first_id + 1]
    rest = await bot.get_updates(offset=first_id + 1, timeout=0)
    assert [u.message.text for u in rest] == ["hello"]
    assert await bot.get_updates(offset=first_id + 2, timeout=0) == ()
    assert sent["message_id"] == 1


async def test_a_timed_out_long_poll_answers_an_empty_list(bot: Bot) -> None:
    assert await bot.get_updates(timeout=0.3) == ()


async def test_photo_sizes_are_made_like_telegrams_and_download(server: BotApiServer, bot: Bot) -> None:
    await server.send_photo(1001, jpeg(1600, 1200), caption="7")
    (update,) = await bot.get_updates(timeout=0)
    sizes = update.message.photo
    assert [(p.width, p.height) for p in sizes] == [
        (90, 68),
        (320, 240),
        (800, 600),
        (1280, 960),
        (1600, 1200),
    ]
    assert update.message.caption == "7"
    file = await bot.get_file(sizes[1].file_id)
    data = bytes(await file.download_as_bytearray())
    assert len(data) == sizes[1].file_size
    assert Image.open(io.BytesIO(data)).size == (320, 240)


async def test_files_over_twenty_megabytes_cannot_be_fetched(server: BotApiServer, bot: Bot) -> None:
    await server.send_document(1001, b"\0" * (20 * 1024 * 1024 + 1), "big.png", "image/png")
    (update,) = await bot.get_updates(timeout=0)
    with pytest.raises(BadRequest, match=r"(?i)file is too big"):
        await bot.get_file(update.message.document.file_id)


async def test_messages_keyboards_edits_and_their_errors(server: BotApiServer, bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("yes", callback_data="v:1:y")]])
    sent = await bot.send_message(1001, "7 — 93%", reply_markup=keyboard)
    assert sent.text == "7 — 93%" and sent.reply_markup == keyboard
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(999, "hi")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(1001, "x" * 4097)
    assert (await bot.send_message(1001, "x" * 4096)).text == "x" * 4096
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("b", callback_data="x" * 65)]])
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(1001, "hi", reply_markup=too_long)

    edited = await bot.edit_message_text("thanks", chat_id=1001, message_id=sent.message_id)
    assert edited.text == "thanks" and edited.reply_markup is None and edited.edit_date is not None
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("thanks", chat_id=1001, message_id=sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=1001, message_id=9999)
    marked = await bot.edit_message_reply_markup(
        chat_id=1001, message_id=sent.message_id, reply_markup=keyboard
    )
    assert marked.reply_markup == keyboard
    assert server.chat(1001).messages[sent.message_id]["text"] == "thanks"


async def test_a_user_message_cannot_be_edited_by_the_bot(server: BotApiServer, bot: Bot) -> None:
    mine = await server.send_text(1001, "hi")
    with pytest.raises(BadRequest, match=r"(?i)can't be edited"):
        await bot.edit_message_text("x", chat_id=1001, message_id=mine["message_id"])


async def test_button_presses_arrive_as_callback_queries_answered_once(
    server: BotApiServer, bot: Bot
) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("yes", callback_data="v:1:y")]])
    sent = await bot.send_message(1001, "7", reply_markup=keyboard)
    with pytest.raises(ValueError, match="no button"):
        await server.press_button(1001, sent.message_id, "v:2:y")
    query_id = await server.press_button(1001, sent.message_id, "v:1:y")
    (update,) = await bot.get_updates(timeout=0)
    assert update.callback_query.id == query_id
    assert update.callback_query.data == "v:1:y"
    assert update.callback_query.message.message_id == sent.message_id
    assert update.callback_query.from_user.id == 1001
    assert await bot.answer_callback_query(query_id, text="Thanks")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query_id)
    answer = await server.wait_for(1001, lambda e: e["type"] == "callback_answer")
    assert answer["text"] == "Thanks"


async def test_sent_photos_and_commands_are_kept(server: BotApiServer, bot: Bot) -> None:
    photo = await bot.send_photo(1001, jpeg(64, 48), caption="report")
    assert (photo.photo[0].width, photo.photo[0].height, photo.caption) == (64, 48, "report")
    file = await bot.get_file(photo.photo[0].file_id)
    assert Image.open(io.BytesIO(bytes(await file.download_as_bytearray()))).size == (64, 48)
    assert await bot.set_my_commands([("help", "what I do"), ("digit", "digits")])
    assert [c.command for c in await bot.get_my_commands()] == ["help", "digit"]
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([("Bad-Name", "x")])
    assert await bot.delete_webhook()
    assert await bot.send_chat_action(1001, "typing")


async def test_webhook_blocks_polling_until_deleted(server: BotApiServer, bot: Bot) -> None:
    assert await bot.set_webhook("https://example.org/hook")
    with pytest.raises(Conflict):
        await bot.get_updates(timeout=0)
    await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == ()


async def test_malformed_updates_are_refused_before_they_reach_the_queue(server: BotApiServer) -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        await server.push_update({"message": {"message_id": 1, "chat": {"id": 1}}})  # no date, no type
    assert await server.push_update(
        {"message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}}
    )


async def test_updates_parse_back_with_de_json(server: BotApiServer, bot: Bot) -> None:
    await server.send_media(1001, "sticker")
    await server.send_media(1001, "voice")
    await server.send_document(1001, b"%PDF-1.4", "paper.pdf", "application/pdf")
    updates = await bot.get_updates(timeout=0)
    assert isinstance(updates[0], Update)
    assert updates[0].message.sticker is not None
    assert updates[1].message.voice is not None
    assert updates[2].message.document.file_name == "paper.pdf"


async def test_a_webhook_receives_updates_in_order_with_the_secret(bot: Bot) -> None:
    from aiohttp import web

    received: list[tuple[str | None, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json()))
        return web.Response(status=200 if len(received) > 1 else 500)  # the first try fails: retried

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with BotApiServer(TOKEN, local_mode=True) as local:
        local.add_user(1001)
        client = Bot(TOKEN, base_url=f"{local.url}/bot")
        async with client:
            assert await client.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
            await local.send_text(1001, "one")
            await local.send_text(1001, "two")
            for _ in range(100):
                if len(received) >= 3 and not local.pending_updates:  # delivered and dropped
                    break
                await asyncio.sleep(0.05)
            assert [(secret, body["message"]["text"]) for secret, body in received] == [
                ("s3cret", "one"),
                ("s3cret", "one"),
                ("s3cret", "two"),
            ]
            assert local.pending_updates == []
            await client.delete_webhook()
    await runner.cleanup()


async def test_plain_http_webhooks_need_local_mode(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
        await bot.set_webhook("http://127.0.0.1:9/hook")


async def test_a_webhook_call_that_times_out_is_delivered_again_while_other_chats_go_on(bot: Bot) -> None:
    """As Telegram: one chat's updates one at a time and in order, other chats meanwhile; a call left
    unanswered past the timeout is a failure, tried again later, and getWebhookInfo says why."""
    from aiohttp import web

    received: list[tuple[int, str]] = []
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        message = (await request.json())["message"]
        received.append((message["chat"]["id"], message["text"]))
        if received == [(1001, "one")]:
            await release.wait()  # the first call outlives the server's patience
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with BotApiServer(TOKEN, local_mode=True) as local:
        local.webhook_timeout_s = 0.5
        local.webhook_retry_delays_s = (0.1,)
        for user in (1001, 1002):
            local.add_user(user)
        client = Bot(TOKEN, base_url=f"{local.url}/bot")
        async with client:
            assert await client.set_webhook(f"http://127.0.0.1:{port}/hook", max_connections=5)
            await local.send_text(1001, "one")
            await local.send_text(1001, "two")
            await local.send_text(1002, "other")
            for _ in range(200):
                if len(received) >= 4 and not local.pending_updates:
                    break
                await asyncio.sleep(0.05)
            release.set()
            assert received[0] == (1001, "one") and received[1] == (1002, "other")  # not held back
            assert received[2:] == [(1001, "one"), (1001, "two")]  # the chat waited for its retry
            first = min(d.update_id for d in local.webhook_deliveries)
            assert [d.outcome for d in local.webhook_deliveries if d.update_id == first] == ["timeout", "ok"]
            info = await client.get_webhook_info()
            assert (info.max_connections, info.last_error_message) == (5, "Read timeout expired")
            await client.delete_webhook()
    await runner.cleanup()
