"""A local Telegram Bot API server: the tests' fake Telegram and the playground's back end, in one.

It speaks the part of the Bot API that PhotoBot uses, with Telegram's URL layout
(`{root}/bot{token}/{method}`, files under `{root}/file/bot{token}/{file_path}`), its JSON shapes, its
error shape (`{"ok": false, "error_code": 400, "description": "Bad Request: …"}`) and its limits
(callback data ≤ 64 bytes, 4096 characters per message, 1024 per caption, 20 MB per download).

The people on the other side are simulated through the Python API of `BotApiServer` (`add_user`,
`send_text`, `send_photo`, `press_button`, …): the tests call it directly, the playground's web page calls
it through HTTP. Every update is checked with python-telegram-bot's own `Update.de_json` before it is
queued, because one malformed update makes a polling bot retry in a hot loop. Everything visible in a
chat is also kept as an ordered event log with revision numbers, so a client can wait for "the next
thing the bot did" without polling.

`BotApiServer` is the front: it owns the HTTP server and hands the work to the parts in
`bot.playground.bot_api` (chats, updates, files, methods, people).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from aiohttp import web

from bot.playground.bot_api.chats import Chats, ChatState, Listener, PendingQuery
from bot.playground.bot_api.files import (
    MAX_DOWNLOAD_BYTES,
    MAX_UPLOAD_BYTES,
    PHOTO_SIDES,
    FileStore,
    StoredFile,
    file_ids,
    telegram_photo_sizes,
)
from bot.playground.bot_api.methods import BotMethods
from bot.playground.bot_api.people import People
from bot.playground.bot_api.protocol import (
    MAX_CALLBACK_DATA_BYTES,
    MAX_CAPTION_LENGTH,
    MAX_MESSAGE_LENGTH,
    BotApiError,
    Json,
    error_response,
    read_params,
)
from bot.playground.bot_api.updates import Delivery, UpdateQueue

__all__ = [
    "MAX_CALLBACK_DATA_BYTES",
    "MAX_CAPTION_LENGTH",
    "MAX_DOWNLOAD_BYTES",
    "MAX_MESSAGE_LENGTH",
    "MAX_UPLOAD_BYTES",
    "PHOTO_SIDES",
    "BotApiError",
    "BotApiServer",
    "ChatState",
    "Delivery",
    "Json",
    "Listener",
    "PendingQuery",
    "StoredFile",
    "telegram_photo_sizes",
]

logger = logging.getLogger(__name__)


class BotApiServer:
    """The Bot API for one bot (`token`), plus the simulated users who talk to it."""

    def __init__(
        self,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_download_bytes: int | None = MAX_DOWNLOAD_BYTES,
        bot_name: str = "PhotoBot",
        local_mode: bool = False,
    ) -> None:
        """`local_mode` acts like a self-hosted `telegram-bot-api --local`: plain-HTTP webhooks allowed."""
        bot_id, _, secret = token.partition(":")
        if not bot_id.isdigit() or not secret:
            raise ValueError("a bot token looks like 123456:ABC-secret")
        self.token = token
        self.host = host
        self.port = port
        self.local_mode = local_mode
        self.bot_user: Json = {
            "id": int(bot_id),
            "is_bot": True,
            "first_name": bot_name,
            "username": f"{bot_name.lower()}_{bot_id}_bot",
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self._chats = Chats(self.bot_user)
        self._updates = UpdateQueue()
        self._files = FileStore(token, max_download_bytes)
        self._people = People(self._chats, self._updates, self._files)
        self._bot_methods = BotMethods(
            self.bot_user, self._chats, self._updates, self._files, local_mode=local_mode
        )
        self._methods = self._bot_methods.by_name()
        # The parts' own dictionaries, shared: the tests and the playground read and change them here.
        self.users: dict[int, Json] = self._chats.users
        self.chats: dict[int, ChatState] = self._chats.by_id
        self.files: dict[str, StoredFile] = self._files.files
        self.commands: dict[str, list[Json]] = self._bot_methods.commands
        self.polls: list[tuple[int, float]] = self._updates.polls  # (offset, timeout) of every getUpdates
        self.file_delays: dict[str, float] = self._files.delays  # file_path → extra seconds (slow download)
        self.file_holds: dict[str, asyncio.Event] = self._files.holds  # file_path → download waits for it
        self.method_calls: dict[str, int] = {}
        # method name → the error it answers with instead of working (an outage, a blocked chat)
        self.failing_methods: dict[str, BotApiError] = {}  # method → its answer to every call
        self.next_failures: dict[str, list[BotApiError]] = {}  # method → the answers to its next calls
        self.app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        self.app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        self.app.router.add_get("/file/bot{token}/{file_path:.+}", self._files.handle_download)
        self._runner: web.AppRunner | None = None

    @property
    def file_delay_s(self) -> float:
        """A slow network: each file download waits this long before answering."""
        return self._files.delay_s

    @file_delay_s.setter
    def file_delay_s(self, seconds: float) -> None:
        self._files.delay_s = seconds

    @property
    def max_download_bytes(self) -> int | None:
        return self._files.max_download_bytes

    @property
    def webhook_url(self) -> str:
        return self._updates.webhook_url

    @property
    def webhook_deliveries(self) -> list[Delivery]:
        """Every webhook POST so far, in the order they ended: the update and how it went."""
        return self._updates.deliveries

    @property
    def webhook_timeout_s(self) -> float:
        """How long a webhook call may take before it counts as failed and is delivered again (60 s)."""
        return self._updates.webhook_timeout_s

    @webhook_timeout_s.setter
    def webhook_timeout_s(self, seconds: float) -> None:
        self._updates.webhook_timeout_s = seconds

    @property
    def webhook_retry_delays_s(self) -> tuple[float, ...]:
        """The waits before an update that failed is delivered again, after each failure in turn."""
        return self._updates.retry_delays_s

    @webhook_retry_delays_s.setter
    def webhook_retry_delays_s(self, delays: tuple[float, ...]) -> None:
        self._updates.retry_delays_s = tuple(delays)

    @property
    def pending_updates(self) -> list[Json]:
        """Updates not yet acknowledged by the bot (they would be delivered again to its next run)."""
        return list(self._updates.pending)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The root to give the bot as TELEGRAM_API_URL."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        logger.info("Bot API server listening on %s", self.url)

    async def stop(self) -> None:
        await self._updates.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BotApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return error_response(BotApiError("Unauthorized", 401))
        name = request.match_info["method"]
        method = self._methods.get(name.lower())
        self.method_calls[name] = self.method_calls.get(name, 0) + 1
        if method is None:
            # Telegram answers 404 here, but python-telegram-bot reads 404 as "invalid token".
            return error_response(BotApiError(f"Bad Request: method {name} not found"))
        failure = next((e for m, e in self.failing_methods.items() if m.lower() == name.lower()), None)
        if failure is None and self.next_failures.get(name):
            failure = self.next_failures[name].pop(0)
        if failure is not None:
            return error_response(failure)
        try:
            params = await read_params(request)
            result = await method(params)
        except BotApiError as error:
            return error_response(error)
        return web.json_response({"ok": True, "result": result})

    # ------------------------------------------------------------------ the people on the other side

    def add_user(
        self,
        user_id: int,
        first_name: str = "Ann",
        *,
        language_code: str | None = "en",
        username: str | None = None,
    ) -> Json:
        """A person who has opened a private chat with the bot."""
        return self._chats.add_user(user_id, first_name, language_code=language_code, username=username)

    async def send_text(self, user_id: int, text: str) -> Json:
        """The user sends a text message; a leading /command gets its bot_command entity, as in Telegram."""
        return await self._people.send_text(user_id, text)

    async def send_photo(
        self, user_id: int, data: bytes, caption: str | None = None, *, as_is: bool = False
    ) -> Json:
        """The user sends a photo. Telegram keeps several re-encoded sizes; so does this (unless `as_is`)."""
        return await self._people.send_photo(user_id, data, caption, as_is=as_is)

    async def send_album(
        self,
        user_id: int,
        photos: Sequence[bytes],
        captions: Sequence[str | None] | None = None,
        group_id: str | None = None,
    ) -> list[Json]:
        """The user sends photos as one album (a media group): a message each, with `captions` (Telegram
        apps put a caption typed under an album on its first photo); `group_id`: more photos of an album
        sent before (to another bot replica), else a new album."""
        return await self._people.send_album(user_id, photos, captions or [None] * len(photos), group_id)

    async def send_document(
        self,
        user_id: int,
        data: bytes,
        file_name: str,
        mime_type: str | None = None,
        caption: str | None = None,
    ) -> Json:
        """The user sends a file (any bytes, any size: Telegram accepts up to 2 GB from people)."""
        return await self._people.send_document(user_id, data, file_name, mime_type, caption)

    async def send_media(self, user_id: int, kind: str) -> Json:
        """The user sends a sticker, video, voice message, audio, animation or video note, or a location,
        contact or dice roll."""
        return await self._people.send_media(user_id, kind)

    async def press_button(self, user_id: int, message_id: int, data: str, *, check: bool = True) -> str:
        """The user presses an inline button under a bot message; returns the callback query id.

        With `check` the button must be on the message, as it must in Telegram. `check=False` sends any
        data: what an old keyboard from an earlier bot version, or a crafted client, produces.
        """
        return await self._people.press_button(user_id, message_id, data, check=check)

    async def push_update(self, content: Json) -> Json:
        """Queue an update (an `update_id` is added), after checking that python-telegram-bot can parse it."""
        return await self._updates.push(content)

    async def _photo_sizes(self, data: bytes) -> list[tuple[bytes, int, int]]:
        """Telegram's sizes of a photo, made once per content (the bot benchmark makes them up front)."""
        return await self._files.photo_sizes(data)

    # ------------------------------------------------------------------ watching a chat

    def chat(self, user_id: int) -> ChatState:
        return self.chats[user_id]

    async def wait_for(
        self, user_id: int, predicate: Callable[[Json], bool], *, after: int = 0, timeout: float = 10.0
    ) -> Json:
        """The first event in the chat after revision `after` that satisfies `predicate`."""
        return await self.chats[user_id].wait_for(predicate, after=after, timeout=timeout)

    async def events_after(self, user_id: int, after: int, timeout: float) -> list[Json]:
        """Events after revision `after`, waiting up to `timeout` seconds for at least one."""
        return await self.chats[user_id].events_after(after, timeout)

    def on_event(self, listener: Listener) -> None:
        """Tell `listener` of every event in every chat, in order (the playground keeps its history so)."""
        self._chats.listeners.append(listener)

    # ------------------------------------------------------------------ an earlier run's chats

    def restore(self, messages: dict[int, list[Json]], files: Iterable[StoredFile]) -> None:
        """Chats and files of an earlier run, before the bot starts: they read as if the server never stopped.

        Each chat's messages become its first events; new messages and files are numbered after them.
        A chat of someone who is not a user (any more) is left out.
        """
        for stored in files:
            self._files.restore(stored)
        for user_id, saved in messages.items():
            if user_id in self.chats:
                self.chats[user_id].restore(saved)

    async def clear_chat(self, user_id: int, keep: Iterable[int] = ()) -> None:
        """Remove a chat's messages but `keep`, and the files no remaining message shows."""
        removed = await self.chats[user_id].clear(keep)
        shown = {f for chat in self.chats.values() for m in chat.messages.values() for f in file_ids(m)}
        self._files.discard({f for m in removed for f in file_ids(m)} - shown)
