"""The `Store` calls about what the bot keeps between updates: flood windows and change counters.

They are in the database rather than in a bot process so that several processes sharing it (replicas
behind one webhook) behave as one: a user's updates count against one limit wherever they land, and a
change one process makes (a taught model) is seen by the others at their next update. The SQL is in
`storage.queries.state`.
"""

from __future__ import annotations

import functools
import time

from storage.dialect import Connection
from storage.group_commit import GroupCommit
from storage.queries import state
from storage.records import FloodWindow

SWEEP_EVERY_S = 60.0  # how often this process deletes closed flood windows


class StateCalls(GroupCommit):
    """Flood windows and change counters, over `GroupCommit`'s reads and writes."""

    _swept_at = float("-inf")  # when this process last deleted closed flood windows

    async def count_update(self, user_id: int, kind: str, *, now: float, window_s: float) -> FloodWindow:
        """Count one update of `kind` ('updates' or 'photos') from `user_id`: their window, this one in.

        `now` is unix time: every process counting in the database must read the same clock. Closed
        windows are deleted once a minute in the same write, so the table holds about one row per user
        active in the last minute.
        """
        sweep = now - self._swept_at >= SWEEP_EVERY_S
        if sweep:
            self._swept_at = now

        def count(db: Connection) -> FloodWindow:
            if sweep:
                state.drop_closed_windows(db, before=now - window_s)
            return state.count_in_window(db, user_id, kind, now, window_s)

        return await self._write(count)

    async def flood_windows(self) -> int:
        """How many flood windows are stored (closed ones not swept yet included)."""
        return await self._read(state.flood_window_count)

    async def note_album_photo(
        self, chat_id: int, group: str, message_id: int, user_id: int, caption: str | None
    ) -> None:
        """A photo of an album (`group`: its media_group_id) arrived here, with its own caption."""
        note = functools.partial(
            state.note_album_photo,
            chat_id=chat_id,
            group=group,
            message_id=message_id,
            user_id=user_id,
            caption=caption,
            now=time.time(),
        )
        await self._write(note)

    async def album_first_photo(self, chat_id: int, group: str) -> tuple[int, str | None] | None:
        """The album's first photo seen by any process sharing the database: message id, own caption."""
        return await self._read(functools.partial(state.album_first_photo, chat_id=chat_id, group=group))

    async def change_version(self, subject: str) -> int:
        """How many times `subject` ('taught_models') has changed: a process that caches it compares."""
        return await self._read(functools.partial(state.change_version, subject=subject))
