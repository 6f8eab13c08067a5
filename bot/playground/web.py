"""The playground: the real bot, the local Bot API server and a Telegram-like web page, on 127.0.0.1.

One aiohttp application on one port serves all three parts: the Bot API the bot polls
(`/bot{token}/…`, `/file/bot{token}/…`, from `BotApiServer`), the page (`/`, `/static/…`) and the page's
small JSON API (`/api/…`), which plays the people in the chat through the server's user-side methods.
The bot is built by the composition root (`photobot.wiring.playground_bot`) as in production, and
runs in this process.

The page's API speaks as the admin, and the bot may run on the real `DATA_DIR`, so the server only
listens on loopback and trusts no web page but its own: any other site the same browser visits could
otherwise post "/rollback digits 1" to it (a cross-site form), read it through a name that resolves to
127.0.0.1 (DNS rebinding), or frame it. Every request must name this server in `Host`; a request that
carries an `Origin` must come from this very origin; every `/api/` call must carry the session token
that only the served page holds (`X-Playground-Token`); the page may not be framed.

The chats outlive the process: with a history folder (`DATA_DIR/playground/` under `photobot
playground`) the server keeps every message and file there (`bot.playground.history`) and reloads them
at start, so the page shows the earlier conversation. When the bot confirms a person's /forget, the
playground drops its copy of that chat too, keeping only the bot's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import html
import io
import ipaddress
import logging
import re
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot import callbacks
from bot.app import start_polling, stop_polling
from bot.playground.bot_api.files import file_ids
from bot.playground.bot_api_server import BotApiServer, Json
from bot.playground.history import ChatHistory

if TYPE_CHECKING:
    from telegram.ext import Application


logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
HOST = "127.0.0.1"  # loopback only: the page's API speaks as the admin
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # what a browser on this machine may call it
TOKEN_HEADER = "X-Playground-Token"
TOKEN_PLACEHOLDER = "{{PLAYGROUND_TOKEN}}"
_TOKEN_IN_PAGE = re.compile(r'<meta name="playground-token" content="([A-Za-z0-9_-]+)">')
PAGE_HEADERS = {
    "Cache-Control": "no-store",  # the page holds the session token
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
USER_ID = 1001
ADMIN_ID = 1002
EVENTS_WAIT_S = 20.0


@dataclasses.dataclass(frozen=True)
class Person:
    id: int
    name: str
    role: str  # "user" or "admin"


PEOPLE = (Person(USER_ID, "Ann", "user"), Person(ADMIN_ID, "Admin", "admin"))


class Playground:
    """The Bot API server with the page and its API mounted beside it."""

    def __init__(
        self, *, port: int = 8080, token: str | None = None, history_dir: Path | None = None
    ) -> None:
        """`history_dir`: where the chats are kept across restarts (None: only while the process runs)."""
        token = token or f"1000000:playground-{secrets.token_hex(16)}"
        self.server = BotApiServer(token, host=HOST, port=port, bot_name="PhotoBot")
        self.session_token = secrets.token_urlsafe(32)  # only the served page learns it
        self.bot_ready = False
        self.bot_error: str | None = None
        self.history_dir = history_dir
        self.history: ChatHistory | None = None
        self._forgetting: dict[int, int] = {}  # chat id → its /forget question, confirmed by the person
        self.server.on_event(self._on_event)
        for person in PEOPLE:
            self.server.add_user(person.id, person.name, language_code="en")
        self.server.app.middlewares.append(self._guard)
        router = self.server.app.router
        router.add_get("/", self._index)
        router.add_static("/static/", STATIC)
        router.add_get("/api/state", self._state)
        router.add_get("/api/events", self._events)
        router.add_get("/api/file/{file_id}", self._file)
        router.add_post("/api/send", self._send)
        router.add_post("/api/press", self._press)
        router.add_post("/api/language", self._language)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """The `Host` values a browser on this machine sends for this server (known once bound)."""
        return frozenset(f"{name}:{self.server.port}" for name in LOOPBACK_NAMES)

    async def start(self) -> None:
        if not ipaddress.ip_address(self.server.host).is_loopback:
            raise ValueError(f"the playground listens on loopback only, not {self.server.host}")
        if self.history_dir is not None:
            self.history = await asyncio.to_thread(ChatHistory, self.history_dir)
            saved = await asyncio.to_thread(self.history.load)
            self.server.restore(saved.messages, saved.files)
            for user_id, language in saved.languages.items():
                if user_id in self.server.users:
                    self.server.users[user_id]["language_code"] = language
            logger.info(
                "playground: %d earlier messages from %s",
                sum(map(len, saved.messages.values())),
                self.history_dir,
            )
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        if self.history is not None:
            await asyncio.to_thread(self.history.close)
            self.history = None

    # ------------------------------------------------------------------ what the chats keep

    async def _on_event(self, chat_id: int, event: Json) -> None:
        """Keep the chat's history, and drop it once the bot has forgotten the person."""
        if self.history is not None:
            self._keep(chat_id, event)
        await self._follow_forget(chat_id, event)

    def _keep(self, chat_id: int, event: Json) -> None:
        """Queue the change on disk now, before another event can be logged: the history keeps their order."""
        assert self.history is not None
        kind = event["type"]
        if kind in ("message", "edit"):
            message = event["message"]
            shown = [self.server.files[f] for f in file_ids(message) if f in self.server.files]
            self.history.save(chat_id, message, shown)
        elif kind == "delete":
            self.history.delete(chat_id, event["message_id"])
        elif kind == "clear":
            self.history.clear(chat_id, event["keep"])

    async def _follow_forget(self, chat_id: int, event: Json) -> None:
        """After a confirmed /forget, the bot edits its question into its answer only once it has forgotten:
        then the person's chat goes too (it holds their photos), all but that answer."""
        if event["type"] == "button" and _confirms_own_forget(chat_id, event["data"]):
            self._forgetting[chat_id] = event["message_id"]
        elif event["type"] == "edit" and self._forgetting.get(chat_id) == event["message"]["message_id"]:
            answer = self._forgetting.pop(chat_id)
            await self.server.clear_chat(chat_id, keep=[answer])

    # ------------------------------------------------------------------ who may call

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Refuse, before any handler runs, what does not come from this server's own page."""
        reason = self._refusal(request)
        if reason is not None:
            # Neither the path (it may hold the bot token) nor the header values: the reason says enough.
            logger.warning("playground refused a %s request: %s", request.method, reason)
            raise web.HTTPForbidden(text=f"refused: {reason}")
        return await handler(request)

    def _refusal(self, request: web.Request) -> str | None:
        """Why `request` is refused, or None. Host first: it also stops DNS rebinding of the page."""
        host = request.headers.get("Host", "").lower()
        if host not in self.allowed_hosts:
            return "unknown Host (open the playground at its 127.0.0.1 address)"
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return "cross-origin request"
        if not request.path.startswith("/api/"):
            return None  # the page itself may be opened from a link; its API may not be called so
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "cross-site request"
        if not self._has_session_token(request):
            return "missing or wrong session token (reload the page)"
        return None

    def _has_session_token(self, request: web.Request) -> bool:
        sent = request.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(sent.encode(), self.session_token.encode())

    # ------------------------------------------------------------------ the page's API

    async def _index(self, request: web.Request) -> web.Response:
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        page = page.replace(TOKEN_PLACEHOLDER, html.escape(self.session_token))
        return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)

    async def _state(self, request: web.Request) -> web.Response:
        people = [
            {**dataclasses.asdict(p), "language": self.server.users[p.id].get("language_code", "en")}
            for p in PEOPLE
        ]
        return web.json_response(
            {
                "bot": {
                    "name": self.server.bot_user["first_name"],
                    "username": self.server.bot_user["username"],
                },
                "ready": self.bot_ready,
                "error": self.bot_error,
                "people": people,
            }
        )

    async def _events(self, request: web.Request) -> web.Response:
        user_id = _person(request.query.get("user"))
        after = int(request.query.get("after", "0"))
        events = await self.server.events_after(user_id, after, EVENTS_WAIT_S)
        return web.json_response({"events": events, "ready": self.bot_ready})

    async def _file(self, request: web.Request) -> web.Response:
        stored = self.server.files.get(request.match_info["file_id"])
        if stored is None:
            raise web.HTTPNotFound()
        return web.Response(body=stored.data, content_type=_content_type(stored.data))

    async def _send(self, request: web.Request) -> web.Response:
        form = await request.post()
        user_id = _person(form.get("user"))
        text = str(form.get("text") or "").strip()
        upload = form.get("file")
        if isinstance(upload, web.FileField):
            data = upload.file.read()
            name = upload.filename or "file"
            as_file = form.get("as_file") == "1" or not await asyncio.to_thread(_is_picture, data)
            if as_file:
                message = await self.server.send_document(
                    user_id, data, name, upload.content_type, text or None
                )
            else:
                try:
                    message = await self.server.send_photo(user_id, data, text or None)
                except Exception as error:  # Telegram refuses photos it cannot process, too
                    raise web.HTTPBadRequest(
                        text=f"Telegram could not process this photo ({error}); send it as a file"
                    ) from None
        elif text:
            message = await self.server.send_text(user_id, text)
        else:
            raise web.HTTPBadRequest(text="nothing to send")
        return web.json_response({"message_id": message["message_id"]})

    async def _press(self, request: web.Request) -> web.Response:
        body = await request.json()
        user_id = _person(body.get("user"))
        try:
            await self.server.press_button(user_id, int(body["message_id"]), str(body["data"]))
        except (KeyError, ValueError) as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        return web.json_response({"ok": True})

    async def _language(self, request: web.Request) -> web.Response:
        body = await request.json()
        user_id = _person(body.get("user"))
        language = str(body.get("language", "en"))
        if language not in ("en", "ru"):
            raise web.HTTPBadRequest(text="language is en or ru")
        self.server.users[user_id]["language_code"] = language
        if self.history is not None:
            self.history.set_language(user_id, language)
        return web.json_response({"ok": True})


def token_in_page(page: str) -> str:
    """The session token embedded in the served page: what a script of this page sends back."""
    found = _TOKEN_IN_PAGE.search(page)
    if found is None:
        raise ValueError("no playground token in the page")
    return found.group(1)


def _confirms_own_forget(chat_id: int, data: str) -> bool:
    try:
        choice = callbacks.decode(data)
    except callbacks.MalformedCallback:
        return False
    return isinstance(choice, callbacks.ForgetChoice) and choice.confirmed and choice.user_id == chat_id


def _person(raw: Any) -> int:
    try:
        user_id = int(raw)
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="user is required") from None
    if user_id not in {p.id for p in PEOPLE}:
        raise web.HTTPBadRequest(text="unknown user")
    return user_id


def _is_picture(data: bytes) -> bool:
    """Whether Telegram would take this as a photo (a still image Pillow can open within sane limits)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return width * height <= 40_000_000 and max(width, height) <= 20 * min(width, height)
    except Exception:
        return False


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"GIF8"):
        return "image/gif"
    return "application/octet-stream"


# ---------------------------------------------------------------------- running it


# Builds the real bot for a Bot API server: (token, the server's root URL, the playground admin's id).
BuildBot = Callable[[str, str, int], "Application"]


async def start_playground(
    build_bot: BuildBot, *, port: int = 8080, history_dir: Path | None = None, on_listening=None
) -> tuple[Playground, Application]:
    """Start the page and the Bot API server, then the real bot pointed at them (models load meanwhile).

    `build_bot` is the composition root's: the playground runs the very bot `photobot run` runs. The
    chats in `history_dir` are shown again, and kept there.
    """
    playground = Playground(port=port, history_dir=history_dir)
    await playground.start()
    if on_listening is not None:
        on_listening(playground)
    application = build_bot(playground.server.token, playground.url, ADMIN_ID)
    await start_polling(application, timeout=10)
    playground.bot_ready = True
    return playground, application


async def stop_playground(playground: Playground, application: Application | None) -> None:
    if application is not None:
        await stop_polling(application)
    await playground.stop()


async def serve(build_bot: BuildBot, *, data_dir: Path, port: int = 8080, on_ready=print) -> None:
    """Run until Ctrl-C / SIGTERM: print the URL, then stop the bot and the server cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def listening(playground: Playground) -> None:
        on_ready(
            f"PhotoBot playground: open {playground.url}  (listening on {HOST} only, this machine; "
            f"data in {data_dir}; starting the bot…; Ctrl-C to stop)"
        )

    playground, application = await start_playground(
        build_bot, port=port, history_dir=data_dir / "playground", on_listening=listening
    )
    try:
        on_ready("PhotoBot playground: the bot is ready")
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await stop_playground(playground, application)
