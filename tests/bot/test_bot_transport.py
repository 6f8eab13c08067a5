"""The bot's HTTP transport: python-telegram-bot's calls carried by aiohttp, with its timeouts and errors.

A real `telegram.Bot` talks through `AiohttpRequest` to small servers on 127.0.0.1: what arrives there
(forms, uploads) and what comes back (answers, errors, silence, closed connections) is checked.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, NetworkError, TimedOut

from bot.transport import AiohttpRequest
from photobot.settings import Settings
from photobot.wiring import build_bot

TOKEN = "4242:transport"


class Recorder:
    """A Bot API stand-in: records each call's form (or multipart parts) and answers like Telegram."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.silent = asyncio.Event()  # set: calls are never answered

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "multipart/form-data":
            fields: dict[str, Any] = {}
            async for part in await request.multipart():
                fields[part.name] = (part.filename, part.headers.get("Content-Type"), await part.read())
        else:
            fields = dict(await request.post())
        if method == "getMe":  # `async with bot` asks who it is
            me = {"id": 4242, "is_bot": True, "first_name": "PhotoBot", "username": "photobot"}
            return web.json_response({"ok": True, "result": me})
        self.calls.append((method, fields))
        if self.silent.is_set():
            await asyncio.sleep(3600)
        if method == "failingMethod":
            body = {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
            return web.json_response(body, status=400)
        message = {"message_id": 7, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "ok"}
        return web.json_response({"ok": True, "result": message})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post(f"/bot{TOKEN}/{{method}}", recorder.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield recorder, f"http://127.0.0.1:{port}/bot"
    await runner.cleanup()


def _bot(base_url: str, request: AiohttpRequest | None = None) -> Bot:
    return Bot(
        TOKEN, base_url=base_url, request=request or AiohttpRequest(), get_updates_request=AiohttpRequest(1)
    )


async def test_a_call_arrives_as_telegrams_form_and_its_answer_is_parsed(recorder) -> None:
    server, url = recorder
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("✅ Correct", callback_data="ok:1")]])
    async with _bot(url) as bot:
        message = await bot.send_message(chat_id=1, text="семь — 7", reply_markup=keyboard)
    assert message.message_id == 7 and message.chat.id == 1
    method, fields = server.calls[-1]
    assert method == "sendMessage"
    assert fields["chat_id"] == "1" and fields["text"] == "семь — 7"
    assert json.loads(fields["reply_markup"]) == keyboard.to_dict()


async def test_a_file_goes_as_a_multipart_upload_beside_the_parameters(recorder) -> None:
    server, url = recorder
    async with _bot(url) as bot:
        await bot.send_document(chat_id=1, document=b"id,label\n1,7\n", filename="labels.csv", caption="ok")
    method, fields = server.calls[-1]
    assert method == "sendDocument"
    assert fields["chat_id"][2] == b"1" and fields["caption"][2] == b"ok"
    filename, _, content = fields["document"]
    assert filename == "labels.csv" and content == b"id,label\n1,7\n"


async def test_telegrams_errors_come_back_as_python_telegram_bots(recorder) -> None:
    _, url = recorder
    async with _bot(url) as bot:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.do_api_request("failingMethod", api_kwargs={"chat_id": 1})


async def test_a_server_that_does_not_answer_times_out(recorder) -> None:
    server, url = recorder
    server.silent.set()
    async with _bot(url, AiohttpRequest(read_timeout=0.3)) as bot:
        with pytest.raises(TimedOut):
            await bot.send_message(chat_id=1, text="anyone?")
    async with _bot(url, AiohttpRequest(read_timeout=None)) as bot:  # None: wait for ever, unless…
        with pytest.raises(TimedOut):  # …the call gives its own timeout (asyncio's 5 s would be no TimedOut)
            await asyncio.wait_for(bot.send_message(chat_id=1, text="anyone?", read_timeout=0.2), 5)


async def test_calls_go_through_the_proxy_that_the_environment_names(recorder, monkeypatch) -> None:
    server, url = recorder
    monkeypatch.setenv("HTTP_PROXY", url.removesuffix("/bot"))  # the recorder, acting as the proxy
    async with _bot("http://bot-api.invalid/bot") as bot:  # a host only the proxy can reach
        await bot.send_message(chat_id=1, text="via the proxy")
    with socket.socket() as probe:  # a proxy that is not there…
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{probe.getsockname()[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # …and not needed for the recorder itself
    async with _bot(url) as bot:
        await bot.send_message(chat_id=1, text="direct")
    assert [fields["text"] for _, fields in server.calls] == ["via the proxy", "direct"]


async def _serve(handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _response(body: bytes, chunked: bool = False) -> bytes:
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n\r\n".encode() + body


async def test_a_slow_answer_that_keeps_coming_is_not_cut_off() -> None:
    """As with httpx, the read timeout bounds each wait for data, not the whole download."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_response(b"", chunked=True))
        for _ in range(8):  # 1.2 s in all, never 0.3 s without data
            await asyncio.sleep(0.15)
            writer.write(b"1\r\nx\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _serve(trickle)
    request = AiohttpRequest(read_timeout=0.3, write_timeout=0.1, connect_timeout=0.1, pool_timeout=0.1)
    async with server:
        await request.initialize()
        try:
            assert await request.retrieve(f"{url}/file/bot{TOKEN}/photo.jpg") == b"x" * 8
        finally:
            await request.shutdown()


async def test_an_upload_the_server_stops_reading_times_out() -> None:
    """aiohttp has no write timeout: an upload's whole call is bounded by the four timeouts together."""

    async def never_read_uploads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/getMe" in head:
            me = {"id": 4242, "is_bot": True, "first_name": "PhotoBot", "username": "photobot"}
            writer.write(_response(json.dumps({"ok": True, "result": me}).encode()))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")  # the next call, on the same connection
        await asyncio.sleep(3600)  # its body is never read

    server, url = await _serve(never_read_uploads)
    request = AiohttpRequest(read_timeout=0.3, connect_timeout=0.3, pool_timeout=0.1, media_write_timeout=0.5)
    async with server, _bot(f"{url}/bot", request) as bot:
        with pytest.raises(TimedOut):  # asyncio's 5 s would be no TimedOut
            await asyncio.wait_for(bot.send_document(chat_id=1, document=b"x" * 32_000_000), 5)


async def test_a_server_that_is_not_there_is_a_network_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    request = AiohttpRequest()
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as raised:
            await request.post(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe")
        assert not isinstance(raised.value, TimedOut)
    finally:
        await request.shutdown()


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    opened = 0

    async def serve_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request with keep-alive, then close anyway (as servers do with idle connections)."""
        nonlocal opened
        opened += 1
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"ok": true, "result": true}'
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = AiohttpRequest()
    async with server:
        await request.initialize()
        try:
            for _ in range(3):
                assert await request.post(f"http://127.0.0.1:{port}/bot{TOKEN}/logOut") is True
                await asyncio.sleep(0.05)  # the server's close reaches us while the connection is idle
        finally:
            await request.shutdown()
    assert opened == 3  # a dead connection reused would have failed with "Server disconnected"


async def test_a_request_is_usable_only_between_initialize_and_shutdown() -> None:
    request = AiohttpRequest()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/", "GET")
    await request.initialize()
    await request.initialize()  # python-telegram-bot may initialize twice: one session
    await request.shutdown()
    await request.shutdown()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/", "GET")


def test_the_bot_sends_every_call_and_its_long_poll_through_it(tmp_path) -> None:
    application = build_bot(Settings(telegram_bot_token="1:test", data_dir=tmp_path))
    calls, polls = application.bot.request, application.bot._request[0]  # [0]: getUpdates' own
    assert isinstance(calls, AiohttpRequest) and isinstance(polls, AiohttpRequest)
    assert polls is not calls and polls.read_timeout == calls.read_timeout == 5.0
