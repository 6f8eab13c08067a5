"""Photo bytes in the database, content-addressed; the images folder is each machine's cache of them.

A photo's bytes are a row of `photo_bytes` (sha256 → data; BLOB on SQLite, BYTEA on PostgreSQL),
written in the same transaction as its `photos` row, so a row never points at missing bytes whatever
crashes, and every machine that reaches the database reaches the photo. The row references its photo
with `ON DELETE CASCADE`: /forget deletes the bytes in its own transaction.

The images folder (`ImageStore`, `<root>/<2 hex>/<sha256>`) is a cache: the bot writes a photo's file
there as it stores it (the decode processes, the feature cache and training read files), and a machine
whose cache lacks a photo writes it from the database when something needs it (`fill_cache`). A cached
file is used only while its `photos` row exists (every read starts from the rows), and the store's
clean-up sweep deletes cached files whose row is gone: that is how a /forget on one machine reaches the
others' caches.

Bytes read from the database are checked against their hash before they are cached, so a tampered row
cannot plant other content under a photo's name. Functions here are synchronous SQL on a `Connection`
(see `storage.sql`); write functions run inside their caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from storage.dialect import Connection
from storage.images import ImageStore, is_sha256_hex, sha256_hex

log = logging.getLogger(__name__)

BATCH = 100  # hashes per `IN (…)` query: well under both engines' parameter limits


def store_bytes(db: Connection, sha256: str, data: bytes) -> None:
    """Keep `data` as the bytes of the photo `sha256` (its `photos` row must exist in this transaction)."""
    db.execute(
        "INSERT INTO photo_bytes (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
        (sha256, data),
    )


def read_bytes(db: Connection, sha256: str) -> bytes | None:
    row = db.execute("SELECT data FROM photo_bytes WHERE sha256 = ?", (sha256,)).fetchone()
    return bytes(row[0]) if row else None


def photos_without_bytes(db: Connection, after: str, limit: int) -> list[str]:
    """Photo rows from before the bytes were kept in the database (their only copy is a file), in hash
    order from after `after`."""
    rows = db.execute(
        """SELECT p.sha256 FROM photos p
           WHERE p.sha256 > ? AND NOT EXISTS (SELECT 1 FROM photo_bytes b WHERE b.sha256 = p.sha256)
           ORDER BY p.sha256 LIMIT ?""",
        (after, limit),
    )
    return [row[0] for row in rows]


def store_bytes_if_photo(db: Connection, sha256: str, data: bytes) -> bool:
    """`store_bytes` for a photo row that may have gone meanwhile (a /forget); True if kept."""
    if db.execute("SELECT 1 FROM photos WHERE sha256 = ?", (sha256,)).fetchone() is None:
        return False
    store_bytes(db, sha256, data)
    return True


def existing_photos(db: Connection, sha256s: Iterable[str]) -> set[str]:
    """Which of `sha256s` have a `photos` row."""
    found: set[str] = set()
    for chunk in _chunks(list(sha256s)):
        marks = ", ".join("?" * len(chunk))
        found.update(
            row[0] for row in db.execute(f"SELECT sha256 FROM photos WHERE sha256 IN ({marks})", chunk)
        )
    return found


def fill_cache(db: Connection, images: ImageStore, sha256s: Sequence[str]) -> int:
    """Write into the cache the photos of `sha256s` it lacks, from their rows; return how many.

    Only photos with a `photos` row are written (bytes without one do not exist), and only bytes that
    hash to their name. Run it inside the caller's read transaction to see one snapshot.
    """
    wanted = [s for s in sha256s if is_sha256_hex(s) and not images.exists(s)]
    filled = 0
    for chunk in _chunks(wanted):
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f"""SELECT b.sha256, b.data FROM photo_bytes b JOIN photos p ON p.sha256 = b.sha256
                WHERE b.sha256 IN ({marks})""",
            chunk,
        ).fetchall()
        for sha256, data in rows:
            data = bytes(data)
            if sha256_hex(data) != sha256:
                log.warning("photo %s: its bytes in the database hash to something else; not cached", sha256)
                continue
            images.put(data)
            filled += 1
    if filled:
        log.info("%s: %d photos written into the cache from the database", images.root, filled)
    return filled


def cached_path(db: Connection, images: ImageStore, sha256: str) -> Path | None:
    """The cached file of a photo that has a row, written from the database when the cache lacks it;
    None when there is no such photo (never made, or forgotten: a stale cached copy is not used)."""
    if not is_sha256_hex(sha256) or not existing_photos(db, [sha256]):
        return None
    if not images.exists(sha256):
        fill_cache(db, images, [sha256])
    return images.path(sha256) if images.exists(sha256) else None


def read_photo(db: Connection, images: ImageStore, sha256: str) -> bytes | None:
    """A photo's bytes if it has a row: from the cache when the cached file is intact, else from the
    database (and cached again)."""
    if not is_sha256_hex(sha256) or not existing_photos(db, [sha256]):
        return None
    if images.exists(sha256):
        data = images.read(sha256)
        if sha256_hex(data) == sha256:
            return data
        log.warning("cached photo %s does not match its hash: read from the database", sha256)
        images.delete(sha256)
    stored = read_bytes(db, sha256)
    if stored is None or sha256_hex(stored) != sha256:
        return None
    images.put(stored)
    return stored


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]
