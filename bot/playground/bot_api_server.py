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
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import itertools
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

MAX_CALLBACK_DATA_BYTES = 64
MAX_MESSAGE_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # what Telegram's cloud Bot API lets a bot download
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # what a bot may upload
PHOTO_SIDES = (90, 320, 800, 1280, 2560)  # the longest sides of the sizes Telegram keeps of a photo
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_TAG = re.compile(r"<[^>]*>")

Json = dict[str, Any]


class BotApiError(Exception):
    """A method failed; it is answered in Telegram's shape."""

    def __init__(self, description: str, code: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class ChatState:
    """One private chat: its messages, the event log clients follow, and a condition to wait on."""

    chat: Json
    messages: dict[int, Json] = field(default_factory=dict)
    events: list[Json] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    next_message_id: int = 1

    @property
    def revision(self) -> int:
        return len(self.events)


@dataclass
class PendingQuery:
    query: Json
    created: float
    answered: bool = False


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
        self.max_download_bytes = max_download_bytes
        self.bot_user: Json = {
            "id": int(bot_id),
            "is_bot": True,
            "first_name": bot_name,
            "username": f"{bot_name.lower()}_{bot_id}_bot",
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.users: dict[int, Json] = {}
        self.chats: dict[int, ChatState] = {}
        self.files: dict[str, StoredFile] = {}
        self.commands: dict[str, list[Json]] = {}
        self.webhook_url = ""
        self._webhook_secret: str | None = None
        self._deliverer: asyncio.Task | None = None
        self.local_mode = local_mode
        self.method_calls: dict[str, int] = {}
        self.polls: list[tuple[int, float]] = []  # (offset, timeout) of every getUpdates, in order
        self.file_delay_s = 0.0  # a slow network: each file download waits this long before answering
        self.file_delays: dict[str, float] = {}  # file_path → extra seconds (one slow download)
        # method name → the error it answers with instead of working (an outage, a blocked chat)
        self.failing_methods: dict[str, BotApiError] = {}
        self._updates: deque[Json] = deque()
        self._update_ids = itertools.count(1)
        self._updates_changed = asyncio.Condition()
        self._queries: dict[str, PendingQuery] = {}
        self._query_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._files_by_content: dict[tuple[str, str], StoredFile] = {}
        self._photo_sizes_cache: dict[str, list[tuple[bytes, int, int]]] = {}
        self._closing = False
        self.app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        self.app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        self.app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[Json], Any]] = {
            name.lower(): getattr(self, f"_m_{snake}")
            for name, snake in (
                ("getMe", "get_me"),
                ("getUpdates", "get_updates"),
                ("getFile", "get_file"),
                ("sendMessage", "send_message"),
                ("sendPhoto", "send_photo"),
                ("sendDocument", "send_document"),
                ("sendChatAction", "send_chat_action"),
                ("editMessageText", "edit_message_text"),
                ("editMessageCaption", "edit_message_caption"),
                ("editMessageReplyMarkup", "edit_message_reply_markup"),
                ("deleteMessage", "delete_message"),
                ("answerCallbackQuery", "answer_callback_query"),
                ("setMyCommands", "set_my_commands"),
                ("getMyCommands", "get_my_commands"),
                ("deleteMyCommands", "delete_my_commands"),
                ("setWebhook", "set_webhook"),
                ("deleteWebhook", "delete_webhook"),
                ("getWebhookInfo", "get_webhook_info"),
                ("close", "close"),
                ("logOut", "log_out"),
            )
        }

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
        self._closing = True
        async with self._updates_changed:
            self._updates_changed.notify_all()
        if self._deliverer is not None:
            await self._deliverer
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
            return _error_response(BotApiError("Unauthorized", 401))
        name = request.match_info["method"]
        method = self._methods.get(name.lower())
        self.method_calls[name] = self.method_calls.get(name, 0) + 1
        if method is None:
            # Telegram answers 404 here, but python-telegram-bot reads 404 as "invalid token".
            return _error_response(BotApiError(f"Bad Request: method {name} not found"))
        failure = next((e for m, e in self.failing_methods.items() if m.lower() == name.lower()), None)
        if failure is not None:
            return _error_response(failure)
        try:
            params = await _read_params(request)
            result = await method(params)
        except BotApiError as error:
            return _error_response(error)
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        path = request.match_info["file_path"]
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if stored is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        delay = self.file_delay_s + self.file_delays.get(stored.file_path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ------------------------------------------------------------------ bot methods

    async def _m_get_me(self, params: Json) -> Json:
        return self.bot_user

    async def _m_get_updates(self, params: Json) -> list[Json]:
        if self.webhook_url:
            raise BotApiError(
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
                409,
            )
        offset = _int(params, "offset", 0)
        limit = min(max(_int(params, "limit", 100), 1), 100)
        timeout = max(_float(params, "timeout", 0.0), 0.0)
        allowed = _json(params, "allowed_updates", None)
        self.polls.append((offset, timeout))
        deadline = time.monotonic() + timeout
        async with self._updates_changed:
            while True:
                self._acknowledge(offset)
                ready = [u for u in self._updates if not allowed or _update_kind(u) in allowed]
                remaining = deadline - time.monotonic()
                if ready or remaining <= 0 or self._closing:
                    return ready[:limit]
                try:
                    await asyncio.wait_for(self._updates_changed.wait(), remaining)
                except TimeoutError:
                    return []

    def _acknowledge(self, offset: int) -> None:
        """Forget updates below `offset` (a negative offset keeps only the last -offset updates)."""
        if offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()
        elif offset > 0:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()

    async def _m_get_file(self, params: Json) -> Json:
        file_id = _str(params, "file_id")
        stored = self.files.get(file_id)
        if stored is None:
            raise BotApiError("Bad Request: invalid file_id")
        if self.max_download_bytes is not None and stored.size > self.max_download_bytes:
            raise BotApiError("Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }

    async def _m_send_message(self, params: Json) -> Json:
        chat = self._chat(params)
        text = _message_text(_str(params, "text", ""), params.get("parse_mode"))
        if not text.strip():
            raise BotApiError("Bad Request: message text is empty")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise BotApiError("Bad Request: message is too long")
        message = self._bot_message(chat, params, text=text)
        return await self._publish(chat, "message", message)

    async def _m_send_photo(self, params: Json) -> Json:
        chat = self._chat(params)
        stored = self._file_param(params, "photo", "photos")
        width, height = await asyncio.to_thread(_image_size, stored.data)
        photo = [
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": stored.size,
                "width": width,
                "height": height,
            }
        ]
        message = self._bot_message(chat, params, photo=photo, **self._caption(params))
        return await self._publish(chat, "message", message)

    async def _m_send_document(self, params: Json) -> Json:
        chat = self._chat(params)
        stored = self._file_param(params, "document", "documents")
        upload = params.get("document")
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_name": getattr(upload, "filename", None) or stored.file_path.rsplit("/", 1)[-1],
        }
        message = self._bot_message(chat, params, document=document, **self._caption(params))
        return await self._publish(chat, "message", message)

    async def _m_send_chat_action(self, params: Json) -> bool:
        self._chat(params)
        _str(params, "action")
        return True

    async def _m_edit_message_text(self, params: Json) -> Json:
        chat, message = self._editable(params)
        if "text" not in message:
            raise BotApiError("Bad Request: there is no text in the message to edit")
        text = _message_text(_str(params, "text", ""), params.get("parse_mode"))
        if not text.strip():
            raise BotApiError("Bad Request: message text is empty")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise BotApiError("Bad Request: message is too long")
        return await self._edit(chat, message, {"text": text}, _markup(params))

    async def _m_edit_message_caption(self, params: Json) -> Json:
        chat, message = self._editable(params)
        if "text" in message:
            raise BotApiError("Bad Request: there is no caption in the message to edit")
        # Without a caption the caption is removed, as Telegram does.
        return await self._edit(chat, message, self._caption(params) or {"caption": None}, _markup(params))

    async def _m_edit_message_reply_markup(self, params: Json) -> Json:
        chat, message = self._editable(params)
        return await self._edit(chat, message, {}, _markup(params))

    async def _m_delete_message(self, params: Json) -> bool:
        chat = self._chat(params)
        message_id = _int(params, "message_id")
        if chat.messages.pop(message_id, None) is None:
            raise BotApiError("Bad Request: message to delete not found")
        await self._log(chat, {"type": "delete", "message_id": message_id})
        return True

    async def _m_answer_callback_query(self, params: Json) -> bool:
        query_id = _str(params, "callback_query_id")
        pending = self._queries.get(query_id)
        if pending is None or pending.answered or time.monotonic() - pending.created > 15 * 60:
            raise BotApiError(
                "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        pending.answered = True
        text = params.get("text") or ""
        if len(text) > 200:
            raise BotApiError("Bad Request: MESSAGE_TOO_LONG")
        chat = self.chats[pending.query["from"]["id"]]
        await self._log(
            chat,
            {
                "type": "callback_answer",
                "callback_query_id": query_id,
                "text": text,
                "show_alert": _bool(params, "show_alert"),
            },
        )
        return True

    async def _m_set_my_commands(self, params: Json) -> bool:
        commands = _json(params, "commands", None)
        if not isinstance(commands, list) or len(commands) > 100:
            raise BotApiError("Bad Request: commands must be a list of at most 100 commands")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.match(str(command.get("command", ""))):
                raise BotApiError("Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise BotApiError("Bad Request: command description is empty or too long")
        self.commands[params.get("language_code") or ""] = commands
        return True

    async def _m_get_my_commands(self, params: Json) -> list[Json]:
        return self.commands.get(params.get("language_code") or "", [])

    async def _m_delete_my_commands(self, params: Json) -> bool:
        self.commands.pop(params.get("language_code") or "", None)
        return True

    async def _m_set_webhook(self, params: Json) -> bool:
        url = _str(params, "url", "")
        if url and not url.startswith("https://") and not (self.local_mode and url.startswith("http://")):
            raise BotApiError("Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        await self._set_webhook(url, params.get("secret_token") or None)
        if _bool(params, "drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_delete_webhook(self, params: Json) -> bool:
        await self._set_webhook("", None)
        if _bool(params, "drop_pending_updates"):
            self._updates.clear()
        return True

    async def _set_webhook(self, url: str, secret: str | None) -> None:
        self.webhook_url, self._webhook_secret = url, secret
        async with self._updates_changed:
            self._updates_changed.notify_all()
        if url and (self._deliverer is None or self._deliverer.done()):
            self._deliverer = asyncio.create_task(self._deliver(), name="bot-api-webhook")

    async def _deliver(self) -> None:
        """POST queued updates to the webhook one by one, in order; an update is dropped once answered 200."""
        import aiohttp

        async with aiohttp.ClientSession() as http:
            while True:
                async with self._updates_changed:
                    await self._updates_changed.wait_for(
                        lambda: self._closing or not self.webhook_url or bool(self._updates)
                    )
                if self._closing or not self.webhook_url:
                    return
                update = self._updates[0]
                headers = (
                    {"X-Telegram-Bot-Api-Secret-Token": self._webhook_secret} if self._webhook_secret else {}
                )
                try:
                    async with http.post(self.webhook_url, json=update, headers=headers) as response:
                        delivered = response.status == 200
                except aiohttp.ClientError as error:
                    logger.info("webhook %s unreachable: %s", self.webhook_url, error)
                    delivered = False
                if delivered and self._updates and self._updates[0] is update:
                    self._updates.popleft()
                elif not delivered:
                    await asyncio.sleep(0.5)

    async def _m_get_webhook_info(self, params: Json) -> Json:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    async def _m_close(self, params: Json) -> bool:
        return True

    async def _m_log_out(self, params: Json) -> bool:
        return True

    @property
    def pending_updates(self) -> list[Json]:
        """Updates not yet acknowledged by the bot (they would be delivered again to its next run)."""
        return list(self._updates)

    # ------------------------------------------------------------------ method helpers

    def _chat(self, params: Json) -> ChatState:
        raw = params.get("chat_id")
        if raw in (None, ""):
            raise BotApiError("Bad Request: chat_id is empty")
        try:
            chat = self.chats.get(int(raw))
        except (TypeError, ValueError):
            chat = None
        if chat is None:
            raise BotApiError("Bad Request: chat not found")
        return chat

    def _bot_message(self, chat: ChatState, params: Json, **content: Any) -> Json:
        message: Json = {
            "message_id": chat.next_message_id,
            "from": self.bot_user,
            "chat": chat.chat,
            "date": int(time.time()),
            **content,
        }
        chat.next_message_id += 1
        reply_to = _json(params, "reply_parameters", None)
        reply_id = (
            reply_to.get("message_id") if isinstance(reply_to, dict) else params.get("reply_to_message_id")
        )
        if reply_id not in (None, ""):
            replied = chat.messages.get(int(reply_id))
            if replied is None:
                raise BotApiError("Bad Request: message to be replied not found")
            message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        markup = _markup(params)
        if markup:
            message["reply_markup"] = markup
        return message

    def _caption(self, params: Json) -> Json:
        caption = params.get("caption")
        if not caption:
            return {}
        text = _message_text(str(caption), params.get("parse_mode"))
        if len(text) > MAX_CAPTION_LENGTH:
            raise BotApiError("Bad Request: message caption is too long")
        return {"caption": text}

    def _file_param(self, params: Json, name: str, folder: str) -> StoredFile:
        value = params.get(name)
        if value is None or value == "":
            raise BotApiError(f"Bad Request: there is no {name} in the request")
        if isinstance(value, web.FileField):
            return self._store_file(value.file.read(), folder, suffix=_suffix(value.filename))
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        raise BotApiError("Bad Request: wrong file identifier/HTTP URL specified")

    def _editable(self, params: Json) -> tuple[ChatState, Json]:
        if params.get("inline_message_id"):
            raise BotApiError("Bad Request: MESSAGE_ID_INVALID")
        chat = self._chat(params)
        message = chat.messages.get(_int(params, "message_id"))
        if message is None:
            raise BotApiError("Bad Request: message to edit not found")
        if message["from"]["id"] != self.bot_user["id"]:
            raise BotApiError("Bad Request: message can't be edited")
        return chat, message

    async def _edit(self, chat: ChatState, message: Json, content: Json, markup: Json | None) -> Json:
        edited = {k: v for k, v in message.items() if k != "reply_markup"}
        edited.update(content)
        edited = {k: v for k, v in edited.items() if v is not None}
        if markup:
            edited["reply_markup"] = markup
        same_content = all(edited.get(k) == message.get(k) for k in ("text", "caption"))
        if same_content and edited.get("reply_markup") == message.get("reply_markup"):
            raise BotApiError(
                "Bad Request: message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message"
            )
        edited["edit_date"] = int(time.time())
        chat.messages[message["message_id"]] = edited
        await self._log(chat, {"type": "edit", "message": edited})
        return edited

    async def _publish(self, chat: ChatState, kind: str, message: Json) -> Json:
        chat.messages[message["message_id"]] = message
        await self._log(chat, {"type": kind, "message": message})
        return message

    async def _log(self, chat: ChatState, event: Json) -> None:
        async with chat.changed:
            event["rev"] = chat.revision + 1
            event["time"] = time.time()
            chat.events.append(event)
            chat.changed.notify_all()

    def _store_file(self, data: bytes, folder: str, suffix: str = "") -> StoredFile:
        digest = hashlib.sha256(data).hexdigest()
        known = self._files_by_content.get((folder, digest))
        if known is not None:  # the same bytes again: Telegram too keeps one file
            return known
        number = next(self._file_ids)
        stored = StoredFile(
            file_id=f"F{number:06d}{digest[:24]}",
            file_unique_id=f"U{digest[:15]}",
            file_path=f"{folder}/file_{number}{suffix}",
            data=data,
        )
        self.files[stored.file_id] = stored
        self._files_by_content[(folder, digest)] = stored
        return stored

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
        user: Json = {"id": user_id, "is_bot": False, "first_name": first_name}
        if language_code:
            user["language_code"] = language_code
        if username:
            user["username"] = username
        self.users[user_id] = user
        if user_id not in self.chats:
            chat = {"id": user_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
            self.chats[user_id] = ChatState(chat=chat)
        return user

    async def send_text(self, user_id: int, text: str) -> Json:
        """The user sends a text message; a leading /command gets its bot_command entity, as in Telegram."""
        content: Json = {"text": text}
        command = re.match(r"^/[A-Za-z0-9_]+(@\w+)?", text)
        if command:
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": command.end()}]
        return await self._user_message(user_id, content)

    async def send_photo(
        self, user_id: int, data: bytes, caption: str | None = None, *, as_is: bool = False
    ) -> Json:
        """The user sends a photo. Telegram keeps several re-encoded sizes; so does this (unless `as_is`)."""
        if as_is:
            width, height = await asyncio.to_thread(_image_size, data)
            sizes = [(data, width, height)]
        else:
            sizes = await self._photo_sizes(data)
        photo = []
        for encoded, width, height in sizes:
            stored = self._store_file(encoded, "photos", ".jpg")
            photo.append(
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "file_size": stored.size,
                    "width": width,
                    "height": height,
                }
            )
        content: Json = {"photo": photo}
        if caption:
            content["caption"] = caption
        return await self._user_message(user_id, content)

    async def send_document(
        self,
        user_id: int,
        data: bytes,
        file_name: str,
        mime_type: str | None = None,
        caption: str | None = None,
    ) -> Json:
        """The user sends a file (any bytes, any size: Telegram accepts up to 2 GB from people)."""
        stored = self._store_file(data, "documents", _suffix(file_name))
        document: Json = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": file_name,
            "file_size": stored.size,
        }
        if mime_type:
            document["mime_type"] = mime_type
        content: Json = {"document": document}
        if caption:
            content["caption"] = caption
        return await self._user_message(user_id, content)

    async def send_media(self, user_id: int, kind: str) -> Json:
        """The user sends a sticker, video, voice message, audio, animation or video note."""
        stored = self._store_file(b"\x00" * 64, kind + "s")
        base = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": stored.size}
        shapes: dict[str, Json] = {
            "sticker": {
                **base,
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "type": "regular",
            },
            "video": {**base, "width": 640, "height": 480, "duration": 3},
            "voice": {**base, "duration": 2},
            "audio": {**base, "duration": 2},
            "animation": {**base, "width": 320, "height": 240, "duration": 2},
            "video_note": {**base, "length": 240, "duration": 2},
        }
        if kind not in shapes:
            raise ValueError(f"unknown media kind {kind!r}")
        return await self._user_message(user_id, {kind: shapes[kind]})

    async def press_button(self, user_id: int, message_id: int, data: str, *, check: bool = True) -> str:
        """The user presses an inline button under a bot message; returns the callback query id.

        With `check` the button must be on the message, as it must in Telegram. `check=False` sends any
        data: what an old keyboard from an earlier bot version, or a crafted client, produces.
        """
        chat = self.chats[user_id]
        message = chat.messages.get(message_id)
        if message is None:
            raise ValueError(f"no message {message_id} in chat {user_id}")
        if check:
            buttons = [b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]
            if data not in [b.get("callback_data") for b in buttons]:
                raise ValueError(f"message {message_id} has no button with data {data!r}")
        query_id = str(next(self._query_ids) * 7919 + self.bot_user["id"] % 1000)
        query: Json = {
            "id": query_id,
            "from": self.users[user_id],
            "message": message,
            "chat_instance": str(-user_id * 31),
            "data": data,
        }
        self._queries[query_id] = PendingQuery(query=query, created=time.monotonic())
        await self._log(chat, {"type": "button", "message_id": message_id, "data": data})
        await self.push_update({"callback_query": query})
        return query_id

    async def push_update(self, content: Json) -> Json:
        """Queue an update (an `update_id` is added), after checking that python-telegram-bot can parse it."""
        from telegram import Update  # the bot package depends on it anyway; keeps import of this module light

        update = {"update_id": next(self._update_ids), **content}
        try:
            Update.de_json(json.loads(json.dumps(update)), None)
        except Exception as error:
            raise ValueError(f"python-telegram-bot cannot parse this update: {error}") from error
        async with self._updates_changed:
            self._updates.append(update)
            self._updates_changed.notify_all()
        return update

    async def _user_message(self, user_id: int, content: Json) -> Json:
        chat = self.chats.get(user_id)
        if chat is None:
            raise ValueError(f"add_user({user_id}) first")
        message: Json = {
            "message_id": chat.next_message_id,
            "from": self.users[user_id],
            "chat": chat.chat,
            "date": int(time.time()),
            **content,
        }
        chat.next_message_id += 1
        await self._publish(chat, "message", message)
        await self.push_update({"message": message})
        return message

    async def _photo_sizes(self, data: bytes) -> list[tuple[bytes, int, int]]:
        key = hashlib.sha256(data).hexdigest()
        if key not in self._photo_sizes_cache:
            self._photo_sizes_cache[key] = await asyncio.to_thread(telegram_photo_sizes, data)
        return self._photo_sizes_cache[key]

    # ------------------------------------------------------------------ watching a chat

    def chat(self, user_id: int) -> ChatState:
        return self.chats[user_id]

    async def wait_for(
        self, user_id: int, predicate: Callable[[Json], bool], *, after: int = 0, timeout: float = 10.0
    ) -> Json:
        """The first event in the chat after revision `after` that satisfies `predicate`."""
        chat = self.chats[user_id]

        def found() -> Json | None:
            return next((e for e in chat.events[after:] if predicate(e)), None)

        async with chat.changed:
            event = found()
            if event is None:
                try:
                    await asyncio.wait_for(chat.changed.wait_for(lambda: found() is not None), timeout)
                except TimeoutError:
                    raise TimeoutError(
                        f"nothing matched in chat {user_id} within {timeout} s; events since {after}: "
                        f"{_summary(chat.events[after:])}"
                    ) from None
                event = found()
        assert event is not None
        return event

    async def events_after(self, user_id: int, after: int, timeout: float) -> list[Json]:
        """Events after revision `after`, waiting up to `timeout` seconds for at least one."""
        chat = self.chats[user_id]
        async with chat.changed:
            if chat.revision <= after:
                try:
                    await asyncio.wait_for(chat.changed.wait_for(lambda: chat.revision > after), timeout)
                except TimeoutError:
                    return []
            return chat.events[after:]


# ---------------------------------------------------------------------- module helpers


def telegram_photo_sizes(data: bytes) -> list[tuple[bytes, int, int]]:
    """Re-encode a photo as Telegram does: JPEGs whose longest side is 90, 320, 800, 1280, 2560 px.

    Sizes larger than the original are not made; the original (re-encoded) is the largest size kept.
    """
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    sizes = []
    for side in PHOTO_SIDES:
        scaled = image.copy()
        scaled.thumbnail((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        scaled.save(buffer, "JPEG", quality=87)
        sizes.append((buffer.getvalue(), scaled.width, scaled.height))
        if max(image.size) <= side:
            break
    return sizes


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        raise BotApiError("Bad Request: IMAGE_PROCESS_FAILED") from None


async def _read_params(request: web.Request) -> Json:
    params: Json = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise BotApiError("Bad Request: can't parse JSON") from None
        params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
    elif request.can_read_body:
        params.update(await request.post())
    return params


def _error_response(error: BotApiError) -> web.Response:
    body = {"ok": False, "error_code": error.code, "description": error.description}
    return web.json_response(body, status=error.code)


def _str(params: Json, name: str, default: str | None = None) -> str:
    value = params.get(name)
    if value is None:
        if default is None:
            raise BotApiError(f"Bad Request: {name} is empty")
        return default
    return str(value)


def _int(params: Json, name: str, default: int | None = None) -> int:
    value = params.get(name)
    if value in (None, ""):
        if default is None:
            raise BotApiError(f"Bad Request: {name} is empty")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BotApiError(f"Bad Request: invalid {name} specified") from None


def _float(params: Json, name: str, default: float) -> float:
    value = params.get(name)
    try:
        return default if value in (None, "") else float(value)
    except (TypeError, ValueError):
        raise BotApiError(f"Bad Request: invalid {name} specified") from None


def _bool(params: Json, name: str) -> bool:
    return str(params.get(name, "")).lower() in ("true", "1")


def _json(params: Json, name: str, default: Any) -> Any:
    value = params.get(name)
    if value in (None, ""):
        return default
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise BotApiError(f"Bad Request: can't parse {name} JSON object") from None


def _markup(params: Json) -> Json | None:
    """Check an inline keyboard against Telegram's rules; other markups are kept as they are."""
    markup = _json(params, "reply_markup", None)
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise BotApiError("Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return markup
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise BotApiError(
            "Bad Request: can't parse inline keyboard button: InlineKeyboardButton must be an object"
        )
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not button.get("text"):
            raise BotApiError("Bad Request: can't parse inline keyboard button: Text buttons are unallowed")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
            raise BotApiError("Bad Request: BUTTON_DATA_INVALID")
    return markup if rows else None


def _message_text(text: str, parse_mode: Any) -> str:
    """What Telegram shows: HTML tags are formatting (entities), not text."""
    if parse_mode == "HTML":
        return html.unescape(_TAG.sub("", text))
    return text


def _suffix(file_name: str | None) -> str:
    if not file_name or "." not in file_name:
        return ""
    suffix = "." + file_name.rsplit(".", 1)[-1].lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _update_kind(update: Json) -> str:
    return next(k for k in update if k != "update_id")


def _summary(events: list[Json]) -> list[str]:
    out = []
    for event in events[-8:]:
        message = event.get("message") or {}
        text = message.get("text") or message.get("caption") or event.get("text") or event.get("data") or ""
        out.append(f"{event['type']}: {str(text)[:60]!r}")
    return out
