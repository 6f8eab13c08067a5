"""SQL about what the bot keeps between updates: per-user flood windows and change counters.

Several bot processes may share one database (replicas behind one webhook, any of them taking any
update): what one of them counts or changes, the next update must see, whichever process takes it.
Write functions run inside their caller's transaction and never commit (see `storage.sql`).
"""

from __future__ import annotations

from storage.dialect import Connection
from storage.records import FloodWindow

# ---------------------------------------------------------------- per-user flood windows


def count_in_window(db: Connection, user_id: int, kind: str, now: float, window_s: float) -> FloodWindow:
    """Count one update of `kind` ('updates', 'photos') from `user_id` and return their window with it.

    A window opens at the user's first update after the last one closed, and lasts `window_s`. One
    statement, under the write lock: two processes counting the same user at once both count.
    """
    closed = now - window_s  # a window that started at or before this has ended
    row = db.execute(
        """INSERT INTO flood_windows (user_id, kind, window_start, count) VALUES (?, ?, ?, 1)
           ON CONFLICT (user_id, kind) DO UPDATE SET
               count = CASE WHEN flood_windows.window_start > ? THEN flood_windows.count + 1 ELSE 1 END,
               window_start = CASE WHEN flood_windows.window_start > ? THEN flood_windows.window_start
                                   ELSE excluded.window_start END
           RETURNING window_start, count""",
        (user_id, kind, now, closed, closed),
    ).fetchone()
    return FloodWindow(start=float(row[0]), count=int(row[1]))


def drop_closed_windows(db: Connection, before: float) -> int:
    """Delete the windows that started at or before `before` (closed: they count nothing any more)."""
    return db.execute("DELETE FROM flood_windows WHERE window_start <= ?", (before,)).rowcount


def flood_window_count(db: Connection) -> int:
    return int(db.execute("SELECT count(*) FROM flood_windows").fetchone()[0])


# ---------------------------------------------------------------- change counters


def note_change(db: Connection, subject: str) -> int:
    """Raise `subject`'s change counter (in the transaction that changes it); its new value."""
    row = db.execute(
        """INSERT INTO changes (subject, version) VALUES (?, 1)
           ON CONFLICT (subject) DO UPDATE SET version = changes.version + 1
           RETURNING version""",
        (subject,),
    ).fetchone()
    return int(row[0])


def change_version(db: Connection, subject: str) -> int:
    """How many times `subject` has changed (0: never)."""
    row = db.execute("SELECT version FROM changes WHERE subject = ?", (subject,)).fetchone()
    return int(row[0]) if row else 0


ALBUM_KEPT_S = 600.0  # an album's photos arrive within seconds; a replica down longer has lost them anyway


def note_album_photo(
    db: Connection, chat_id: int, group: str, message_id: int, user_id: int, caption: str | None, now: float
) -> None:
    """A photo of an album arrived; albums older than `ALBUM_KEPT_S` are deleted in the same write."""
    db.execute("DELETE FROM album_photos WHERE arrived_at < ?", (now - ALBUM_KEPT_S,))
    db.execute(
        """INSERT INTO album_photos (chat_id, media_group_id, message_id, user_id, caption, arrived_at)
           VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (chat_id, media_group_id, message_id) DO NOTHING""",
        (chat_id, group, message_id, user_id, caption, now),
    )


def album_first_photo(db: Connection, chat_id: int, group: str) -> tuple[int, str | None] | None:
    """The message id and own caption of the album's first photo seen by any process, if any."""
    row = db.execute(
        """SELECT message_id, caption FROM album_photos WHERE chat_id = ? AND media_group_id = ?
           ORDER BY message_id LIMIT 1""",
        (chat_id, group),
    ).fetchone()
    return (int(row[0]), row[1]) if row else None
