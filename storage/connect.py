"""Opening the database the same way everywhere: refuse a newer schema, then WAL, FULL sync, FKs, migrate."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from storage.schema import check_not_newer, migrate

DEFAULT_BUSY_TIMEOUT_S = 10.0


def open_database(
    path: Path | str,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    read_only: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode (we write BEGIN/COMMIT ourselves), ready for the current schema.

    The schema version is checked before anything is written, so a database from a newer PhotoBot is
    refused untouched. `synchronous=FULL` makes every COMMIT durable (the WAL is fsynced); group
    commit in `Store` keeps that affordable.
    """
    path = Path(path)
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
