"""The bot's HTTP transport: httpx's pool with a cheaper idle-connection check that still notices closes."""

from __future__ import annotations

import asyncio
import socket

import httpx

from bot.app import build_application
from bot.transport import PooledTransport, _readable
from photobot.settings import Settings


def test_a_socket_is_readable_when_data_or_the_peers_close_is_waiting() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert not _readable(ours)
        theirs.sendall(b"x")
        assert _readable(ours)
        ours.recv(1)
        assert not _readable(ours)
        theirs.close()
        assert _readable(ours)  # the close: reading returns b"" at once
    finally:
        ours.close()
    assert _readable(ours)  # closed here: fileno -1, the pool must drop it
    assert _readable(None)


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    opened = 0

    async def serve_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request with keep-alive, then close anyway (as servers do with idle connections)."""
        nonlocal opened
        opened += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = PooledTransport(httpx.Limits(max_connections=4))
    async with server, httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.text == "ok"
            await asyncio.sleep(0.05)  # the server's close reaches us while the connection is idle
    # A check that never saw the close would reuse the dead connection: "Server disconnected".
    assert opened == 3


def test_the_bot_talks_to_the_bot_api_through_it(tmp_path) -> None:
    settings = Settings(telegram_bot_token="1:test", data_dir=tmp_path)
    application = build_application(settings)
    client = application.bot.request._client
    assert isinstance(client._transport, PooledTransport)
