"""Model versions shared through PostgreSQL: what `inference.model_store.ModelStore` registers versions
in when DATABASE_URL names a server, so that every machine serves the same versions.

    model_versions (name, version, meta)        one row per version; meta is its meta.json
    model_files    (name, version, path, sha256) the version's files, by relative path
    model_blobs    (sha256, size, data)          the files' content, addressed by its SHA-256 (bytea)
    model_serving  (name, version)               the serving version of each model: the pointer

Publishing uploads the files (a blob already there is not sent again), then numbers the version under a
transaction-level advisory lock per model name, so two publishers at once get distinct numbers; blobs,
version and files commit together or not at all. `set_active` replaces the pointer row, and every
process follows it by polling `active` (the Classifier's ENGINE_RELOAD_POLL_S): one indexed read per
model per poll, which needs no listening connection to keep alive. Fetching writes the files as stored;
the model store checks each against its SHA-256 before the version may serve.

The tables come from the schema's migrations, so they exist on SQLite as well, unused: a files-only
store is the embedded default. Why PostgreSQL rather than an object store: docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg

from storage.dialect import Database, describe, is_postgres_url
from storage.postgres import PostgresConnection

# Keys of the per-model advisory locks (any constants; "PhMP", "PhMS" in ASCII): numbering a published
# version (held until its transaction ends), and seeding a fresh deployment (held by a session).
PUBLISH_LOCK = 0x50684D50
SEED_LOCK = 0x50684D53
SEED_WAIT_S = 600  # a process waits this long for another to seed (the flower model takes seconds)

Row = tuple[Any, ...]


class PostgresRegistry:
    """`inference.model_store.VersionRegistry` over one PostgreSQL database (thread-safe: one lock)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._db: PostgresConnection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresRegistry({describe(self.url)})"

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        """The registry's connection, opened (and migrated) on first use and again after a failure."""
        with self._lock:
            if self._db is None or self._db.connection.closed or self._db.connection.broken:
                self._db = _open(self.url, self.timeout_s)
            try:
                yield self._db.connection
            except psycopg.OperationalError:
                self._db.close()  # a server restart: the next call connects again
                self._db = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def names(self) -> list[str]:
        with self._connection() as db:
            rows = db.execute("SELECT DISTINCT name FROM model_versions ORDER BY name").fetchall()
        return [str(name) for (name,) in rows]

    def versions(self, name: str) -> list[dict[str, Any]]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT meta FROM model_versions WHERE name = %s ORDER BY version", (name,)
            ).fetchall()
        return [_meta(meta) for (meta,) in rows]

    def meta(self, name: str, version: int) -> dict[str, Any] | None:
        with self._connection() as db:
            row = db.execute(
                "SELECT meta FROM model_versions WHERE name = %s AND version = %s", (name, version)
            ).fetchone()
        return None if row is None else _meta(row[0])

    def files(self, name: str, version: int) -> dict[str, str]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT path, sha256 FROM model_files WHERE name = %s AND version = %s ORDER BY path",
                (name, version),
            ).fetchall()
        return {str(path): str(sha256) for path, sha256 in rows}

    def publish(self, name: str, meta: dict[str, Any], files: Mapping[str, Path]) -> int:
        now = time.time()
        with self._connection() as db, db.transaction():
            digests = {path: _upload(db, Path(file), now) for path, file in sorted(files.items())}
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PUBLISH_LOCK, _key(name)))
            (version,) = _one(
                db.execute(
                    "SELECT COALESCE(max(version), 0) + 1 FROM model_versions WHERE name = %s",
                    (name,),
                )
            )
            stored = {**meta, "name": name, "version": version}
            db.execute(
                "INSERT INTO model_versions (name, version, meta, created) VALUES (%s, %s, %s, %s)",
                (name, version, json.dumps(stored, sort_keys=True), now),
            )
            for path, digest in digests.items():
                db.execute(
                    "INSERT INTO model_files (name, version, path, sha256) VALUES (%s, %s, %s, %s)",
                    (name, version, path, digest),
                )
        return int(version)

    def update_meta(self, name: str, version: int, fields: dict[str, Any]) -> dict[str, Any]:
        with self._connection() as db, db.transaction():
            row = db.execute(
                "SELECT meta FROM model_versions WHERE name = %s AND version = %s FOR UPDATE",
                (name, version),
            ).fetchone()
            if row is None:
                raise KeyError(f"{name} has no version {version}")
            meta = {**_meta(row[0]), **fields}
            db.execute(
                "UPDATE model_versions SET meta = %s WHERE name = %s AND version = %s",
                (json.dumps(meta, sort_keys=True), name, version),
            )
        return meta

    def active(self, name: str) -> int | None:
        with self._connection() as db:
            row = db.execute("SELECT version FROM model_serving WHERE name = %s", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_active(self, name: str, version: int) -> None:
        with self._connection() as db:
            db.execute(
                """INSERT INTO model_serving (name, version, changed) VALUES (%s, %s, %s)
                   ON CONFLICT (name) DO UPDATE SET version = excluded.version, changed = excluded.changed""",
                (name, version, time.time()),
            )

    def fetch(self, name: str, version: int, folder: Path) -> None:
        """Write the version's files under `folder`, one blob in memory at a time (binary transfer)."""
        for path, digest in self.files(name, version).items():
            with self._connection() as db:
                row = db.execute(
                    "SELECT data FROM model_blobs WHERE sha256 = %s", (digest,), binary=True
                ).fetchone()
            if row is None:
                raise FileNotFoundError(f"{name} v{version}: no blob {digest} for {path}")
            target = folder.joinpath(*_parts(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(row[0]))

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A session-level advisory lock on a connection of its own: released by its end, or the
        holder's death (the server drops the session)."""
        db = _open(self.url, self.timeout_s)
        try:
            db.connection.execute(f"SET lock_timeout = '{SEED_WAIT_S}s'")
            db.connection.execute("SELECT pg_advisory_lock(%s, %s)", (SEED_LOCK, _key(name)))
            yield
        finally:
            db.close()


def registry_for(database: Database) -> PostgresRegistry | None:
    """The registry a model store shares versions through: PostgreSQL's, or None for a SQLite file
    (the embedded default: the model store's folders are the store)."""
    return PostgresRegistry(str(database)) if is_postgres_url(database) else None


def _open(url: str, timeout_s: float) -> PostgresConnection:
    from storage.connect import open_database

    db = open_database(url, busy_timeout_s=timeout_s)
    if not isinstance(db, PostgresConnection):
        db.close()
        raise ValueError(f"{url} is not a PostgreSQL database")
    return db


def _upload(db: psycopg.Connection[Row], file: Path, now: float) -> str:
    """Store a file's content as a blob (unless it is there already); return its SHA-256."""
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if db.execute("SELECT 1 FROM model_blobs WHERE sha256 = %s", (digest,)).fetchone() is None:
        db.execute(
            """INSERT INTO model_blobs (sha256, size, data, created) VALUES (%s, %s, %s, %s)
               ON CONFLICT (sha256) DO NOTHING""",
            (digest, len(data), data, now),
        )
    return digest


def _one(cursor: psycopg.Cursor[Row]) -> Row:
    row = cursor.fetchone()
    assert row is not None
    return row


def _meta(text: object) -> dict[str, Any]:
    meta = json.loads(str(text))
    if not isinstance(meta, dict):
        raise ValueError(f"a model version's meta is not a JSON object: {str(text)[:80]}")
    return meta


def _key(name: str) -> int:
    """A model name as the second key of a two-key advisory lock (a signed 32-bit integer)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


def _parts(path: str) -> tuple[str, ...]:
    """A stored relative path's parts; refuse one that could leave the version's folder."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part in ("", ".", "..") for part in pure.parts):
        raise ValueError(f"{path!r} is not a file name inside a version")
    return pure.parts
