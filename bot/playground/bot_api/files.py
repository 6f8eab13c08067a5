"""Files sent either way: stored once per content, described by getFile, downloaded under `/file/bot…`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import re
from dataclasses import dataclass

from aiohttp import web

from bot.playground.bot_api.protocol import BotApiError, Json

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # what Telegram's cloud Bot API lets a bot download
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # what a bot may upload
PHOTO_SIDES = (90, 320, 800, 1280, 2560)  # the longest sides of the sizes Telegram keeps of a photo
FILE_KINDS = ("document", "sticker", "video", "voice", "audio", "animation", "video_note")


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def describe(self) -> Json:
        """The fields every Telegram file object carries."""
        return {"file_id": self.file_id, "file_unique_id": self.file_unique_id, "file_size": self.size}


class FileStore:
    """Every file by id, with Telegram's download limit and an optional slow network for downloads."""

    def __init__(self, token: str, max_download_bytes: int | None) -> None:
        self.token = token
        self.max_download_bytes = max_download_bytes
        self.files: dict[str, StoredFile] = {}
        self.delay_s = 0.0  # a slow network: each file download waits this long before answering
        self.delays: dict[str, float] = {}  # file_path → extra seconds (one slow download)
        self.holds: dict[str, asyncio.Event] = {}  # file_path → answered once set (a download that hangs)
        self._ids = itertools.count(1)
        self._by_content: dict[tuple[str, str], StoredFile] = {}
        self._photo_sizes: dict[str, list[tuple[bytes, int, int]]] = {}

    def store(self, data: bytes, folder: str, suffix: str = "") -> StoredFile:
        digest = hashlib.sha256(data).hexdigest()
        known = self._by_content.get((folder, digest))
        if known is not None:  # the same bytes again: Telegram too keeps one file
            return known
        number = next(self._ids)
        stored = StoredFile(
            file_id=f"F{number:06d}{digest[:24]}",
            file_unique_id=f"U{digest[:15]}",
            file_path=f"{folder}/file_{number}{suffix}",
            data=data,
        )
        self.files[stored.file_id] = stored
        self._by_content[(folder, digest)] = stored
        return stored

    def restore(self, stored: StoredFile) -> None:
        """A file from an earlier run, under its old id and path; new files are numbered after it."""
        self.files[stored.file_id] = stored
        folder = stored.file_path.split("/", 1)[0]
        self._by_content[(folder, hashlib.sha256(stored.data).hexdigest())] = stored
        number = int(stored.file_id[1:-24])  # F{number:06d}{24 hex digits}, as `store` names it
        self._ids = itertools.count(max(number + 1, next(self._ids)))

    def discard(self, file_ids: set[str]) -> None:
        """Drop these files (their chat is forgotten), and every photo's cached sizes with them."""
        for key, stored in list(self._by_content.items()):
            if stored.file_id in file_ids:
                del self._by_content[key]
        for file_id in file_ids:
            self.files.pop(file_id, None)
        self._photo_sizes.clear()

    def from_param(self, params: Json, name: str, folder: str) -> StoredFile:
        """The file a send method passes in `name`: an upload (stored now) or the id of a known file."""
        value = params.get(name)
        if value is None or value == "":
            raise BotApiError(f"Bad Request: there is no {name} in the request")
        if isinstance(value, web.FileField):
            return self.store(value.file.read(), folder, suffix=file_suffix(value.filename))
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        raise BotApiError("Bad Request: wrong file identifier/HTTP URL specified")

    def get_file(self, file_id: str) -> Json:
        """getFile's answer: where to download the file, refused above the download limit."""
        stored = self.files.get(file_id)
        if stored is None:
            raise BotApiError("Bad Request: invalid file_id")
        if self.max_download_bytes is not None and stored.size > self.max_download_bytes:
            raise BotApiError("Bad Request: file is too big")
        return {**stored.describe(), "file_path": stored.file_path}

    async def photo_sizes(self, data: bytes) -> list[tuple[bytes, int, int]]:
        """Telegram's sizes of a photo, re-encoded once per content (re-encoding is the slow part)."""
        key = hashlib.sha256(data).hexdigest()
        if key not in self._photo_sizes:
            self._photo_sizes[key] = await asyncio.to_thread(telegram_photo_sizes, data)
        return self._photo_sizes[key]

    async def handle_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        path = request.match_info["file_path"]
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if stored is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        delay = self.delay_s + self.delays.get(stored.file_path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        hold = self.holds.get(stored.file_path)
        if hold is not None:
            await hold.wait()
        return web.Response(body=stored.data, content_type="application/octet-stream")


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


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image the bot sends; Telegram refuses what it cannot open."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        raise BotApiError("Bad Request: IMAGE_PROCESS_FAILED") from None


def file_suffix(file_name: str | None) -> str:
    if not file_name or "." not in file_name:
        return ""
    suffix = "." + file_name.rsplit(".", 1)[-1].lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def file_ids(message: Json) -> list[str]:
    """The files a message shows itself (a quoted message's files belong to that message)."""
    ids = [size["file_id"] for size in message.get("photo", [])]
    return ids + [message[kind]["file_id"] for kind in FILE_KINDS if kind in message]
