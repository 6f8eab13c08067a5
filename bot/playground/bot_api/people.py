"""The people on the other side: what a simulated user sends or presses becomes a message and an update."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from bot.playground.bot_api.chats import Chats
from bot.playground.bot_api.files import FileStore, file_suffix, image_size
from bot.playground.bot_api.protocol import Json
from bot.playground.bot_api.updates import UpdateQueue

# What people send that has no file: a place, a contact, a dice roll (as Telegram describes them).
ATTACHMENTS: dict[str, Json] = {
    "location": {"latitude": 59.94, "longitude": 30.31},
    "contact": {"phone_number": "+10000000000", "first_name": "Ann"},
    "dice": {"emoji": "🎲", "value": 4},
}


class People:
    """Users' messages, files and button presses, shown in their chat and queued for the bot."""

    def __init__(self, chats: Chats, updates: UpdateQueue, files: FileStore) -> None:
        self.chats = chats
        self.updates = updates
        self.files = files
        self._albums = 0

    async def send_text(self, user_id: int, text: str) -> Json:
        content: Json = {"text": text}
        command = re.match(r"^/[A-Za-z0-9_]+(@\w+)?", text)
        if command:
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": command.end()}]
        return await self._user_message(user_id, content)

    async def send_album(
        self, user_id: int, photos: Sequence[bytes], captions: Sequence[str | None], group_id: str | None
    ) -> list[Json]:
        """Photos sent together: one message each, sharing a media_group_id, as Telegram delivers them."""
        self._albums += 1
        group = {"media_group_id": group_id or str(13_000_000_000 + self._albums)}
        return [
            await self.send_photo(user_id, data, caption, as_is=False, extra=group)
            for data, caption in zip(photos, captions, strict=True)
        ]

    async def send_photo(
        self, user_id: int, data: bytes, caption: str | None, *, as_is: bool, extra: Json | None = None
    ) -> Json:
        if as_is:
            width, height = await asyncio.to_thread(image_size, data)
            sizes = [(data, width, height)]
        else:
            sizes = await self.files.photo_sizes(data)
        photo = []
        for encoded, width, height in sizes:
            stored = self.files.store(encoded, "photos", ".jpg")
            photo.append({**stored.describe(), "width": width, "height": height})
        content: Json = {"photo": photo, **(extra or {})}
        if caption:
            content["caption"] = caption
        return await self._user_message(user_id, content)

    async def send_document(
        self, user_id: int, data: bytes, file_name: str, mime_type: str | None, caption: str | None
    ) -> Json:
        stored = self.files.store(data, "documents", file_suffix(file_name))
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
        if kind in ATTACHMENTS:  # no file behind them
            return await self._user_message(user_id, {kind: ATTACHMENTS[kind]})
        stored = self.files.store(b"\x00" * 64, kind + "s")
        base = stored.describe()
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

    async def press_button(self, user_id: int, message_id: int, data: str, *, check: bool) -> str:
        chat = self.chats.by_id[user_id]
        message = chat.messages.get(message_id)
        if message is None:
            raise ValueError(f"no message {message_id} in chat {user_id}")
        if check:
            buttons = [b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]
            if data not in [b.get("callback_data") for b in buttons]:
                raise ValueError(f"message {message_id} has no button with data {data!r}")
        query = self.chats.new_query(user_id, message, data)
        await chat.log({"type": "button", "message_id": message_id, "data": data})
        await self.updates.push({"callback_query": query})
        return query["id"]

    async def _user_message(self, user_id: int, content: Json) -> Json:
        chat, message = self.chats.user_message(user_id, content)
        await chat.publish("message", message)
        await self.updates.push({"message": message})
        return message
