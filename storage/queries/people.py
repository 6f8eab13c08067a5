"""SQL about people: users and chats, their statistics, and forgetting a user (`/forget`).

Write functions run inside their caller's transaction and never commit (see `storage.sql`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.dialect import Connection
from storage.records import ForgetReport, GlobalStats, ModelStats, User, UserStats, check_mode

# ---------------------------------------------------------------- users and chats


def touch_user(db: Connection, user_id: int, language: str | None, now: float) -> None:
    db.execute(
        """INSERT INTO users (id, language, first_seen, last_seen) VALUES (?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET
               last_seen = CASE WHEN excluded.last_seen > users.last_seen
                   THEN excluded.last_seen ELSE users.last_seen END,
               language = coalesce(excluded.language, users.language)""",
        (user_id, language, now, now),
    )


def get_user(db: Connection, user_id: int) -> User | None:
    row = db.execute(
        "SELECT id, language, first_seen, last_seen, blocked FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    return User(row[0], row[1], row[2], row[3], bool(row[4])) if row else None


def set_blocked(db: Connection, user_id: int, blocked: bool, now: float) -> User:
    touch_user(db, user_id, None, now)
    db.execute("UPDATE users SET blocked = ? WHERE id = ?", (int(blocked), user_id))
    user = get_user(db, user_id)
    assert user is not None
    return user


def blocked_users(db: Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT id FROM users WHERE blocked = 1 ORDER BY id")]


def set_chat_mode(db: Connection, chat_id: int, mode: str, now: float) -> None:
    check_mode(mode)
    db.execute(
        """INSERT INTO chats (id, mode, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, updated_at = excluded.updated_at""",
        (chat_id, mode, now),
    )


def chat_mode(db: Connection, chat_id: int) -> str:
    row = db.execute("SELECT mode FROM chats WHERE id = ?", (chat_id,)).fetchone()
    return row[0] if row else "auto"


# ---------------------------------------------------------------- statistics


# A "photo" everywhere the bot counts (/stats, admin /stats, /forget): a distinct photo a person sent,
# answered or labelled; the same photo sent twice by one person is one photo, by two people two.
_PEOPLES_PHOTOS = """SELECT user_id, photo_sha256 FROM predictions
    UNION SELECT user_id, photo_sha256 FROM contributions"""


def user_photo_count(db: Connection, user_id: int) -> int:
    """How many distinct photos the user sent (see `_PEOPLES_PHOTOS`)."""
    return len(user_photo_hashes(db, user_id))


def user_stats(db: Connection, user_id: int) -> UserStats:
    photos = user_photo_count(db, user_id)
    feedback = dict(
        db.execute(
            "SELECT verdict, count(*) FROM feedback WHERE user_id = ? GROUP BY verdict", (user_id,)
        ).fetchall()
    )
    contributions = db.execute("SELECT count(*) FROM contributions WHERE user_id = ?", (user_id,)).fetchone()[
        0
    ]
    correct, wrong = feedback.get("correct", 0), feedback.get("wrong", 0)
    return UserStats(user_id, photos, correct + wrong, correct, wrong, contributions)


def global_stats(db: Connection, now: float) -> GlobalStats:
    def one(sql: str, params: Sequence[Any] = ()) -> Any:
        return db.execute(sql, params).fetchone()[0]

    day_ago = now - 86_400
    by_model: dict[str, ModelStats] = {}
    for model, predictions, feedback, correct in db.execute(
        """SELECT coalesce(p.model, 'none'), count(*), count(f.prediction_id),
                  coalesce(sum(CASE WHEN f.verdict = 'correct' THEN 1 ELSE 0 END), 0)
           FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.id
           GROUP BY coalesce(p.model, 'none') ORDER BY 1"""
    ):
        by_model[model] = ModelStats(predictions, feedback, correct)
    predictions = one("SELECT count(*) FROM predictions")
    timed = one("SELECT count(latency_ms) FROM predictions")
    median = None
    if timed:
        median = one(
            """SELECT latency_ms FROM predictions WHERE latency_ms IS NOT NULL
               ORDER BY latency_ms LIMIT 1 OFFSET ?""",
            (timed // 2,),
        )
    return GlobalStats(
        users=one("SELECT count(*) FROM users"),
        blocked_users=one("SELECT count(*) FROM users WHERE blocked = 1"),
        active_users_24h=one("SELECT count(*) FROM users WHERE last_seen >= ?", (day_ago,)),
        photos=one(f"SELECT count(*) FROM ({_PEOPLES_PHOTOS}) AS sent"),
        predictions=predictions,
        predictions_24h=one("SELECT count(*) FROM predictions WHERE created_at >= ?", (day_ago,)),
        by_status=dict(db.execute("SELECT status, count(*) FROM predictions GROUP BY status ORDER BY 1")),
        by_model=by_model,
        feedback=one("SELECT count(*) FROM feedback"),
        contributions=one("SELECT count(*) FROM contributions"),
        median_latency_ms=median,
    )


# ---------------------------------------------------------------- forgetting a user


def user_photo_hashes(db: Connection, user_id: int) -> list[str]:
    """The SHA-256 of every photo the user sent (answered or labelled), shared with others or not."""
    return [
        row[0]
        for row in db.execute(
            """SELECT photo_sha256 FROM predictions WHERE user_id = ?
               UNION SELECT photo_sha256 FROM contributions WHERE user_id = ?
               ORDER BY 1""",
            (user_id, user_id),
        )
    ]


def forget_user(db: Connection, user_id: int, now: float) -> tuple[ForgetReport, list[str]]:
    """Delete every row about a user; return the report and the photos nobody else sent.

    Those photos' rows go too, and their files are queued in `image_deletions` in this same
    transaction, so a crash before the files are removed cannot forget to remove them. A blocked
    user keeps a bare row (id, the block, and `now` as both times): forgetting must not unblock.
    """
    photos = user_photo_hashes(db, user_id)
    _note_forgotten(db, photos, now)
    feedback = db.execute(
        """DELETE FROM feedback WHERE user_id = ?
              OR prediction_id IN (SELECT id FROM predictions WHERE user_id = ?)""",
        (user_id, user_id),
    ).rowcount
    contributions = db.execute("DELETE FROM contributions WHERE user_id = ?", (user_id,)).rowcount
    predictions = db.execute("DELETE FROM predictions WHERE user_id = ?", (user_id,)).rowcount
    db.execute("DELETE FROM chats WHERE id = ?", (user_id,))
    db.execute("DELETE FROM pending_corrections WHERE user_id = ?", (user_id,))
    db.execute("DELETE FROM album_photos WHERE user_id = ?", (user_id,))
    kept_block = _forget_user_row(db, user_id, now)
    orphans = []
    for sha256 in photos:
        still_used = db.execute(
            """SELECT EXISTS (SELECT 1 FROM predictions WHERE photo_sha256 = ?)
                   OR EXISTS (SELECT 1 FROM contributions WHERE photo_sha256 = ?)""",
            (sha256, sha256),
        ).fetchone()[0]
        if still_used:
            continue
        path = db.execute("DELETE FROM photos WHERE sha256 = ? RETURNING path", (sha256,)).fetchone()
        if path is not None:
            db.execute(
                """INSERT INTO image_deletions (sha256, path) VALUES (?, ?)
                   ON CONFLICT (sha256) DO UPDATE SET path = excluded.path""",
                (sha256, path[0]),
            )
            orphans.append(sha256)
    report = ForgetReport(
        user_id, predictions, feedback, contributions, len(photos), kept_block, files=len(orphans)
    )
    return report, orphans


FORGOTTEN_KEPT_S = 30 * 24 * 3600.0  # a machine down for longer cleans its copies by hand


def _note_forgotten(db: Connection, sha256s: Sequence[str], now: float) -> None:
    """Tell the other machines which photos to delete their copies of; forget what is long past."""
    db.execute("DELETE FROM forgotten_photos WHERE forgotten_at < ?", (now - FORGOTTEN_KEPT_S,))
    for sha256 in sha256s:
        db.execute("INSERT INTO forgotten_photos (sha256, forgotten_at) VALUES (?, ?)", (sha256, now))


def forgotten_after(db: Connection, after: int) -> tuple[int, list[str]]:
    """The photos forgotten since row `after` (on any machine), and the last row seen."""
    rows = db.execute("SELECT id, sha256 FROM forgotten_photos WHERE id > ? ORDER BY id", (after,)).fetchall()
    return (int(rows[-1][0]) if rows else after), sorted({row[1] for row in rows})


def _forget_user_row(db: Connection, user_id: int, now: float) -> bool:
    """Delete the user's row, or strip a blocked user's to the block alone; True if a block was kept."""
    kept = db.execute(
        """UPDATE users SET language = NULL, first_seen = ?, last_seen = ?
           WHERE id = ? AND blocked = 1""",
        (now, now, user_id),
    ).rowcount
    if not kept:
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))
    return bool(kept)


def pending_image_deletions(db: Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT sha256 FROM image_deletions ORDER BY sha256")]


def claim_image_deletion(db: Connection, sha256: str) -> bool:
    """Drop a queued deletion; True if the file may be removed now (no photo row needs it again).

    Call it, and remove the file, while holding the write lock: a concurrent `insert_photo` of the
    same bytes then either comes before (and keeps the file) or after (and finds it missing).
    """
    db.execute("DELETE FROM image_deletions WHERE sha256 = ?", (sha256,))
    return db.execute("SELECT 1 FROM photos WHERE sha256 = ?", (sha256,)).fetchone() is None
