"""Albums: several photos sent at once, with one caption for all of them.

Telegram delivers an album (a media group) as one message per photo, sharing a `media_group_id`, and
keeps the caption a person typed under the album on its first photo only. Someone teaching `dog` with an
album of ten dog photos means all ten; so a photo of an album without a caption of its own takes the
caption of the album's first photo. A caption on a later photo is that photo's own: the photos before
it do not take it, and neither do those after it unless the first photo has none.

The photos of an album arrive in order, and their handlers start in that order, so in one process the
first photo is usually seen before the others look for its caption. Each photo is also noted in the
database (`AlbumRecords`), where webhook replicas sharing it find the first photo of an album whose
photos were spread over them. A photo that sees no earlier photo of its album waits a moment (`WAIT_S`)
for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Protocol

WAIT_S = 0.5  # how long a photo that is the first of its album seen here waits for an earlier one
POLL_S = 0.1  # how often it looks in the database meanwhile
KEEP_S = 120.0  # an album's photos all arrive within seconds; older albums are forgotten here


class AlbumRecords(Protocol):
    """Where the processes sharing a database note the photos of albums (`storage.Store`)."""

    async def note_album_photo(
        self, chat_id: int, group: str, message_id: int, user_id: int, caption: str | None
    ) -> None: ...

    async def album_first_photo(self, chat_id: int, group: str) -> tuple[int, str | None] | None: ...


@dataclass
class _Album:
    photos: dict[int, str | None] = field(default_factory=dict)  # message id → its own caption
    seen: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def first(self) -> tuple[int, str | None]:
        message_id = min(self.photos)
        return message_id, self.photos[message_id]

    def add(self, message_id: int, caption: str | None) -> None:
        self.photos.setdefault(message_id, caption or None)
        self.seen = time.monotonic()
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class Albums:
    """The albums this process has seen photos of, per chat and media group, and those of its replicas
    (`records`, when given)."""

    records: AlbumRecords | None = None
    wait_s: float = WAIT_S
    _albums: dict[tuple[int, str], _Album] = field(default_factory=dict)

    def note(self, chat_id: int, group: str, message_id: int, caption: str | None) -> None:
        """A photo of an album arrived (called before anything is awaited, so in arrival order)."""
        self._forget_old()
        self._albums.setdefault((chat_id, group), _Album()).add(message_id, caption)

    async def share(
        self, chat_id: int, group: str, message_id: int, user_id: int, caption: str | None
    ) -> None:
        """Note the photo where the other replicas look too."""
        if self.records is not None:
            await self.records.note_album_photo(chat_id, group, message_id, user_id, caption or None)

    async def caption(self, chat_id: int, group: str, message_id: int) -> str | None:
        """The album's caption for its photo `message_id` (noted already, without a caption of its own):
        its first photo's caption, once a photo before this one is known; None if there is none."""
        album = self._albums.get((chat_id, group))
        if album is None:
            return None
        deadline = time.monotonic() + self.wait_s
        while (first := album.first())[0] == message_id:
            if self.records is not None and (shared := await self.records.album_first_photo(chat_id, group)):
                album.add(*shared)
                if shared[0] != message_id:
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            step = remaining if self.records is None else min(remaining, POLL_S)
            with contextlib.suppress(TimeoutError):  # then look again
                await asyncio.wait_for(album.changed.wait(), step)
        return first[1]

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [key for key, album in self._albums.items() if now - album.seen > KEEP_S]:
            del self._albums[key]
