"""The playground: the real bot, the local Bot API server and a Telegram-like web page, on 127.0.0.1.

One aiohttp application on one port serves all three parts: the Bot API the bot polls
(`/bot{token}/…`, `/file/bot{token}/…`, from `BotApiServer`), the page (`/`, `/static/…`) and the page's
small JSON API (`/api/…`), which plays the people in the chat through the server's user-side methods.
The bot is built by the same `build_application` as in production and runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import secrets
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.playground.bot_api_server import BotApiServer
from bot.services import MODEL_NAMES

if TYPE_CHECKING:
    from telegram.ext import Application

    from photobot.settings import Settings

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
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

    def __init__(self, *, port: int = 8080, token: str | None = None) -> None:
        token = token or f"1000000:playground-{secrets.token_hex(8)}"
        self.server = BotApiServer(token, host="127.0.0.1", port=port, bot_name="PhotoBot")
        self.bot_ready = False
        self.bot_error: str | None = None
        for person in PEOPLE:
            self.server.add_user(person.id, person.name, language_code="en")
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

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    # ------------------------------------------------------------------ the page's API

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

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
        return web.json_response({"ok": True})


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


async def start_playground(
    settings: Settings, *, port: int = 8080, on_listening=None, models: Sequence[str] = MODEL_NAMES
) -> tuple[Playground, Application]:
    """Start the page and the Bot API server, then the real bot pointed at them (models load meanwhile)."""
    from bot.app import build_application

    playground = Playground(port=port)
    await playground.start()
    if on_listening is not None:
        on_listening(playground)
    settings = dataclasses.replace(
        settings,
        telegram_bot_token=playground.server.token,
        telegram_api_url=playground.url,
        admin_ids=settings.admin_ids | {ADMIN_ID},
        webhook_url=None,
    )
    application = build_application(settings, models=models)
    await application.initialize()
    await application.post_init(application)
    await application.start()
    await application.updater.start_polling(timeout=10, poll_interval=0)
    playground.bot_ready = True
    return playground, application


async def stop_playground(playground: Playground, application: Application | None) -> None:
    if application is not None:
        if application.updater.running:
            await application.updater.stop()
        if application.running:
            await application.stop()
        await application.shutdown()
        await application.post_shutdown(application)
    await playground.stop()


async def serve(settings: Settings, *, port: int = 8080, on_ready=print) -> None:
    """Run until Ctrl-C / SIGTERM: print the URL, then stop the bot and the server cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def listening(playground: Playground) -> None:
        on_ready(f"PhotoBot playground: open {playground.url}  (starting the bot…; Ctrl-C to stop)")

    playground, application = await start_playground(settings, port=port, on_listening=listening)
    try:
        on_ready("PhotoBot playground: the bot is ready")
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await stop_playground(playground, application)
