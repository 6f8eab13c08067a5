"""HTTP to the Bot API: python-telegram-bot's requests, carried by aiohttp instead of httpx.

python-telegram-bot sends every call through a `BaseRequest`; its default is httpx, whose pure-Python
stack (httpx, httpcore, h11, anyio) was 52% of the bot's event-loop thread in `photobot bench bot` (10
users, digit photos; py-spy): four HTTP exchanges per photo (getUpdates shared, getFile, the download,
sendMessage) at ~1 ms of CPU each, on the one thread that also runs every handler. aiohttp parses HTTP
in C, keeps its pool's bookkeeping per host, and learns of a connection the server closed from asyncio
itself (no check per idle connection per request, which httpcore does at every request's start and end
and which grows with the square of the pool at 50 users).

With it, the bot's CPU per digit photo went from 18–21 to 11–14 ms and its throughput at 10 users from
~80 to 115–148 photos/s (README, Performance). aiohttp's `trust_env` is left off: it reads the proxy
variables and ~/.netrc in a thread for every call, which cost most of that gain (a median of 87.5
against 136.9 photos/s over five rounds).

A webhook replica sets `BEFORE_ANSWER` while it handles an update (`bot.webhook`): the first call that
shows the person something waits until the database notes that an answer is on its way.

Everything above the wire stays python-telegram-bot's: `BaseRequest` builds the parameters, parses the
answer and raises its errors (BadRequest, RetryAfter, …); this module only moves bytes, with
the timeouts of the bot's config (`BotConfig.api_timeouts`, python-telegram-bot's defaults unless
set) and python-telegram-bot's TimedOut / NetworkError for failures on the way, whose texts
never carry the token that every Bot API URL holds (`bot.redaction`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.request
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from bot.config import ApiTimeouts
from bot.redaction import redact_url

logger = logging.getLogger(__name__)

# The type of python-telegram-bot's "not passed" marker: use the request's own timeout.
DefaultValue = type(BaseRequest.DEFAULT_NONE)

CONNECTION_POOL_SIZE = 256  # python-telegram-bot's default for the Bot API calls
DEFAULT_TIMEOUTS = ApiTimeouts()

# Awaited before every Bot API call that may show a person something, in the task handling one
# webhook update (and the tasks it starts): `bot.webhook` notes there that an answer may be on its way.
BEFORE_ANSWER: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("before_answer", default=None)
# A Bot API server error (a restart, an overloaded gateway) usually passes within a second: each call
# is made once more before python-telegram-bot sees the error, so a photo's download or its answer is not
# lost to one bad moment. Telegram answers 5xx for calls it did not carry out.
SERVER_ERRORS = frozenset({500, 502, 503, 504})
SERVER_ERROR_RETRIES = 1
SERVER_ERROR_PAUSE_S = 0.5
# Calls that show nobody anything: sending them twice is harmless.
QUIET_METHODS = frozenset(
    {"sendchataction", "setmycommands", "deletemycommands", "setwebhook", "deletewebhook", "logout", "close"}
)


def bot_api_request(
    pool_size: int = CONNECTION_POOL_SIZE, timeouts: ApiTimeouts = DEFAULT_TIMEOUTS
) -> AiohttpRequest:
    """The request for every Bot API call but getUpdates."""
    return AiohttpRequest(
        pool_size=pool_size,
        read_timeout=timeouts.read_s,
        write_timeout=timeouts.write_s,
        connect_timeout=timeouts.connect_s,
        pool_timeout=timeouts.pool_s,
        media_write_timeout=timeouts.media_write_s,
    )


def get_updates_request(timeouts: ApiTimeouts = DEFAULT_TIMEOUTS) -> AiohttpRequest:
    """The request for getUpdates: one call at a time; python-telegram-bot adds the long poll's own
    timeout to the read timeout."""
    return bot_api_request(1, timeouts)


class AiohttpRequest(BaseRequest):
    """A `BaseRequest` over one `aiohttp.ClientSession`, opened in `initialize` (it needs the loop)."""

    def __init__(
        self,
        pool_size: int = CONNECTION_POOL_SIZE,
        read_timeout: float | None = DEFAULT_TIMEOUTS.read_s,
        write_timeout: float | None = DEFAULT_TIMEOUTS.write_s,
        connect_timeout: float | None = DEFAULT_TIMEOUTS.connect_s,
        pool_timeout: float | None = DEFAULT_TIMEOUTS.pool_s,
        media_write_timeout: float | None = DEFAULT_TIMEOUTS.media_write_s,
    ) -> None:
        self._pool_size = pool_size
        self._timeouts = {
            "read": read_timeout,
            "write": write_timeout,
            "connect": connect_timeout,
            "pool": pool_timeout,
            "media_write": media_write_timeout,
        }
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts["read"]

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, ssl=ssl.create_default_context(cafile=certifi.where())
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT}
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """See `BaseRequest.do_request`: the status and the body, or TimedOut / NetworkError."""
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        before_answer = BEFORE_ANSWER.get()
        if before_answer is not None and shows_something(url):
            await before_answer()
        uploads = request_data is not None and request_data.contains_files
        timeout = self._timeout(
            read=read_timeout,
            write=write_timeout,
            connect=connect_timeout,
            pool=pool_timeout,
            uploads=uploads,
        )
        try:
            for attempt in range(1 + SERVER_ERROR_RETRIES):
                async with self._session.request(
                    method, url, data=_body(request_data), timeout=timeout, proxy=self._proxy_for(url)
                ) as response:
                    status, body = response.status, await response.read()
                if status not in SERVER_ERRORS or attempt == SERVER_ERROR_RETRIES:
                    return status, body
                logger.info("the Bot API answered %d; asking again in %.1f s", status, SERVER_ERROR_PAUSE_S)
                await asyncio.sleep(SERVER_ERROR_PAUSE_S)
            raise AssertionError("unreachable: the last attempt returns")
        except TimeoutError as error:  # aiohttp's own timeouts are TimeoutErrors too
            failure: NetworkError = TimedOut(f"Timed out ({_describe(error, url)})")
        except aiohttp.ClientError as error:
            failure = NetworkError(_describe(error, url))
        raise failure  # outside the handlers: aiohttp's error is neither its cause nor its context

    def _proxy_for(self, url: str) -> str | None:
        """The proxy that HTTP(S)_PROXY / NO_PROXY name for this URL, as python-telegram-bot's httpx
        honours them; looked up once per host. (aiohttp's own `trust_env` reads them, and ~/.netrc, in
        a thread for every call: in py-spy, a thread hop and a file parse per Bot API call.)"""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            bypass = urllib.request.proxy_bypass(key[1])
            self._proxies[key] = None if bypass else urllib.request.getproxies().get(key[0])
        return self._proxies[key]

    def _timeout(self, *, uploads: bool, **given: Any) -> aiohttp.ClientTimeout:
        """python-telegram-bot's four timeouts in aiohttp's terms.

        aiohttp bounds each read (`sock_read`: as httpx's read timeout, a slow download that keeps
        coming is not cut off), the socket's connect (`sock_connect`) and getting a connection, from
        the pool or a new one (`connect`). It has no write timeout: a plain call's form fits in the
        socket's buffer at once, but an upload can stall, so an upload's whole call is bounded by the
        four together (`total`). None means no limit, as with httpx.
        """
        defaults = {**self._timeouts, "write": self._timeouts["media_write" if uploads else "write"]}
        seconds = {
            name: defaults[name] if isinstance(value, DefaultValue) else value
            for name, value in given.items()
        }
        read, write, connect, pool = (seconds[name] for name in ("read", "write", "connect", "pool"))
        limits = [limit for limit in (read, write, connect, pool) if limit is not None]
        return aiohttp.ClientTimeout(
            total=sum(limits) if uploads and len(limits) == 4 else None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )


def shows_something(url: str) -> bool:
    """Whether a Bot API call may change what a person sees (sendMessage, editMessageText,
    answerCallbackQuery …): every method but the get* ones, the quiet ones and file downloads."""
    if "/file/bot" in url:
        return False
    method = url.rsplit("/", 1)[-1].split("?", 1)[0].lower()
    return not method.startswith("get") and method not in QUIET_METHODS


def _describe(error: BaseException, url: str) -> str:
    """aiohttp's error as text without the token: its text quotes the URL, `…/bot<TOKEN>/method`.

    The errors above are raised without aiohttp's as their cause or context for the same reason: a
    chained exception's text is printed in every logged traceback.
    """
    name = type(error).__name__
    if type(error).__module__.startswith("aiohttp"):
        name = f"aiohttp.{name}"
    return redact_url(url, f"{name}: {error}" if str(error) else name)


def _body(request_data: RequestData | None) -> aiohttp.FormData | dict[str, str] | None:
    """The call's parameters as httpx would send them: a form, multipart when files go with it."""
    if request_data is None:
        return None
    if not request_data.contains_files:
        return request_data.json_parameters or None
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mime_type) in request_data.multipart_data.items():
        form.add_field(name, content, filename=filename, content_type=mime_type)
    return form
