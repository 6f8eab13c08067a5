"""HTTP to the Bot API: python-telegram-bot's own request, with a cheaper check of idle connections.

httpcore looks at every pooled connection whenever a request starts or a response ends, and asks each
idle one whether the server has closed it ("is the socket readable?"). Its AnyIO stream answers through
anyio's typed attributes, which build a dict of getters and call getpeername(2) on every question (over
TLS, for both layers). PhotoBot's connections sit idle while the models work, so there are many to ask:
py-spy put the check at ~10% of the event loop's thread in `photobot bench bot` (10 users, digit
photos), about 1 ms per photo. The stream below remembers its socket and answers with one poll(2).

Everything else is httpx's and httpcore's own: the pool, limits, timeouts, TLS, HTTP/1.1.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from telegram.request import HTTPXRequest

CONNECTION_POOL_SIZE = 256  # python-telegram-bot's default for the Bot API calls


def bot_api_request(pool_size: int = CONNECTION_POOL_SIZE) -> HTTPXRequest:
    """python-telegram-bot's default request for Bot API calls (not getUpdates), over `PooledTransport`."""
    return HTTPXRequest(
        connection_pool_size=pool_size,
        httpx_kwargs={"transport": PooledTransport(httpx.Limits(max_connections=pool_size))},
    )


class PooledTransport(httpx.AsyncHTTPTransport):
    """httpx's transport whose connections come from `CheapIdleChecks`."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        # httpx builds its pool without a way to pass a network backend: the same pool, rebuilt with one.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheapIdleChecks(),
        )


class CheapIdleChecks(httpcore.AsyncNetworkBackend):
    """httpcore's AnyIO backend, handing out `_Stream`s."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """A stream that knows its socket, so "is it readable?" is one poll(2); the rest is delegated."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._stream.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether reading would not block: data, or the server's close (as httpcore's own check; a socket
    we cannot poll counts as readable, so the pool drops the connection)."""
    if sock is None or sock.fileno() == -1:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
