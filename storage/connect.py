"""Opening the database the same way everywhere: a SQLite file or a PostgreSQL URL, checked and migrated.

`open_database(database)` is the one door: `database` is a path (SQLite, the embedded default) or a
`postgresql://` URL (DATABASE_URL); either way it returns a `storage.dialect.Connection` in autocommit
mode, on the current schema. SQLite: refuse a newer schema, then WAL, FULL sync, foreign keys, migrate.
PostgreSQL: connect (a failure is one `DatabaseUnavailable` line), refuse a newer schema, migrate.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from storage.dialect import Connection, Database, is_postgres_url
from storage.schema import check_not_newer, migrate

DEFAULT_BUSY_TIMEOUT_S = 10.0


def open_database(
    database: Database,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    read_only: bool = False,
) -> Connection:
    """A connection in autocommit mode (we write BEGIN/COMMIT ourselves), ready for the current schema.

    The schema version is checked before anything is written, so a database from a newer PhotoBot is
    refused untouched. Every COMMIT is durable when it returns (SQLite: `synchronous=FULL`, the WAL is
    fsynced; PostgreSQL: `synchronous_commit`); group commit in `Store` keeps that affordable.
    `read_only` connections never migrate and refuse writes. `busy_timeout_s` bounds the wait for
    the write lock (and, on PostgreSQL, for the connection itself).
    """
    if is_postgres_url(database):
        return _open_postgres(str(database), timeout_s=busy_timeout_s, read_only=read_only)
    return open_sqlite(Path(database), busy_timeout_s=busy_timeout_s, read_only=read_only)


def database_exists(database: Database) -> bool:
    """Whether there is a database to read: the SQLite file exists (a server's database always does)."""
    return is_postgres_url(database) or Path(database).is_file()


def _open_postgres(url: str, *, timeout_s: float, read_only: bool) -> Connection:
    from storage import postgres  # psycopg is imported only by those who use it

    db = postgres.connect(url, timeout_s=timeout_s, read_only=read_only)
    try:
        check_not_newer(db, db.database)
        if not read_only:
            migrate(db, db.database)
    except BaseException:
        db.close()
        raise
    return db


def open_sqlite(
    path: Path,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    read_only: bool = False,
) -> sqlite3.Connection:
    """`open_database` for a SQLite file."""
    if read_only and not path.is_file():
        raise FileNotFoundError(f"no PhotoBot database at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        check_not_newer(db, path)
        if read_only:
            db.execute("PRAGMA query_only = ON")
            return db
        _switch_to_wal(db, path, timeout_s=busy_timeout_s)
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _switch_to_wal(db: sqlite3.Connection, path: Path, *, timeout_s: float) -> None:
    """Put the database in WAL mode, waiting up to `timeout_s` for other connections doing the same.

    When several processes open a new file at once, SQLite can answer "database is locked" to the
    journal-mode change straight away, without its busy handler (it failed a CI run; here once in 40
    starts of 12 processes on a busy machine), so this waits and retries itself.
    """
    deadline = time.monotonic() + timeout_s
    pause_s = 0.005
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + pause_s > deadline:
                raise
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.1)
    if mode.lower() != "wal":
        raise sqlite3.OperationalError(f"{path}: could not switch to WAL mode")
