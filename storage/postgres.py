"""PostgreSQL through psycopg 3, called exactly like sqlite3 (`storage.dialect.Connection`).

psycopg 3 was chosen over asyncpg because its synchronous `Connection.execute(sql, params)` returns a
cursor with `fetchone` / `fetchall` / `rowcount`, the shape of sqlite3's: one set of query functions
serves both engines, and both the async `Store` (which runs them on its connections' own threads, as it
does with SQLite) and the synchronous `SyncStore`, jobs and command line. asyncpg is async-only and
would need a second copy of every query for the synchronous side.

`PostgresConnection` translates what the two engines spell differently:

- `?` placeholders → `%s` (a literal `%` → `%%`); `?` inside quotes or `--` comments is left alone;
- `BEGIN IMMEDIATE` (SQLite: take the write lock now) → `BEGIN` plus a transaction-level advisory lock,
  `WRITE_LOCK`: one writer at a time across every process, as SQLite's lock gives, so the
  check-then-write steps in the queries (one active retrain job, one feedback per prediction, a photo
  file checked under the lock before its row commits) hold on both engines;
- plain `BEGIN` (SQLite in WAL: a read snapshot) → `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`.

Commits are durable when they return (the server's default `synchronous_commit = on`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import conninfo, pq

from storage.dialect import describe
from storage.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the one write lock (any constant; "PhBt" in ASCII).
WRITE_LOCK = 0x50684274

_SERVER_AT = re.compile(r'connection to server (?:at|on) "[^"]*"(?:, port \d+)? failed: ')
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%")
_STATEMENTS = {
    "BEGIN IMMEDIATE": f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})",
    "BEGIN": "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
}


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """A statement with `?` placeholders as psycopg wants it: `%s`, and every literal `%` doubled."""

    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        return text.replace("%", "%%")  # psycopg reads `%` everywhere, quoted or not

    return _TOKENS.sub(token, sql)


class PostgresConnection:
    """A psycopg connection in autocommit mode that takes sqlite3's calls (see the module's doc).

    A connection the server dropped (a restart, a failover, a network cut) is opened again where that
    is safe: at the start of a transaction, or for a SELECT outside one. A statement inside a
    transaction that meets the break fails as it is (whether its COMMIT landed cannot be known); the
    caller's next transaction gets the new connection.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[tuple[Any, ...]]], database: str) -> None:
        self._connect = connect
        self.connection = connect()
        self.database = describe(database)  # no password

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[tuple[Any, ...]]:
        words = sql.split(None, 1)
        first = words[0].upper() if words else ""
        retry = first in ("BEGIN", "SELECT") and not self.in_transaction
        if retry and self.broken:
            self._reconnect()
        try:
            return self._execute(sql, parameters)
        except psycopg.OperationalError:
            if not (retry and self.broken):
                if first == "BEGIN" and self.in_transaction and not self.broken:
                    self.connection.execute("ROLLBACK")  # BEGIN failed (the write lock's timeout): as SQLite
                raise
        self._reconnect()
        return self._execute(sql, parameters)

    def _execute(self, sql: str, parameters: Sequence[Any]) -> psycopg.Cursor[tuple[Any, ...]]:
        if not parameters:
            # No parameters: psycopg sends the text as it is (no `%` to escape, several statements allowed).
            return self.connection.execute(_STATEMENTS.get(sql, sql))
        return self.connection.execute(translate(sql), parameters)

    def _reconnect(self) -> None:
        log.warning("the connection to %s was lost; connecting again", self.database)
        with contextlib.suppress(psycopg.Error):
            self.connection.close()
        self.connection = self._connect()

    @property
    def broken(self) -> bool:
        """The server dropped the connection (a restart, a network cut)."""
        return bool(self.connection.broken or self.connection.closed)

    @property
    def in_transaction(self) -> bool:
        status = self.connection.info.transaction_status
        return status in (
            pq.TransactionStatus.ACTIVE,
            pq.TransactionStatus.INTRANS,
            pq.TransactionStatus.INERROR,
        )

    def close(self) -> None:
        self.connection.close()

    def __repr__(self) -> str:
        return f"PostgresConnection({self.database})"


def connect(url: str, *, timeout_s: float = 10.0, read_only: bool = False) -> PostgresConnection:
    """Connect to the database at `url` (autocommit; `read_only`: every transaction read-only).

    `timeout_s` bounds the connection attempt and each wait for a lock (SQLite's busy timeout).

    Any failure to connect — a bad URL, an unknown or unreachable host, a wrong password, a missing
    database — raises `DatabaseUnavailable` with one line that names the host and database, never the
    password.
    """
    where = describe(url)
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        # libpq quotes the part of the URL it could not read, which may be the tail of a password whose
        # @ : / ? # it took for the URL's own: what it quotes of the password is not shown.
        reason = _without_password_parts(_reason(error, _password_in(url)).replace(url, where), url)
        raise DatabaseUnavailable(
            f"DATABASE_URL is not a PostgreSQL URL that can be read ({reason}); expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, with any @ : / ? # % in the password "
            "percent-encoded (%40 for @)"
        ) from None
    # lock_timeout: a writer waits for the write lock as long as SQLite's busy timeout, then fails.
    options = f"-c lock_timeout={max(1, round(timeout_s * 1000))}"
    if read_only:
        options += " -c default_transaction_read_only=on"

    def open_connection() -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, round(timeout_s)),
                application_name="photobot",
                options=options,
            )
        except psycopg.Error as error:
            reason = _reason(error, params.get("password"))
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {where}: {reason}") from None

    return PostgresConnection(open_connection, url)


def _without_password_parts(reason: str, url: str) -> str:
    """`reason` with every quoted part that holds four characters in a row of what may be the URL's
    password (everything between the user's colon and the last @) masked."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    if not password:
        return reason
    pieces = {password[i : i + 4] for i in range(max(1, len(password) - 3))}
    return _QUOTED.sub(
        lambda quoted: '"***"' if any(piece in quoted.group() for piece in pieces) else quoted.group(), reason
    )


def _password_in(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _reason(error: psycopg.Error, password: object) -> str:
    """psycopg's message in one line, without the address (the caller names it) or the password."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = "; ".join(lines) or type(error).__name__
    reason = reason.removeprefix("connection failed: ")
    reason = _SERVER_AT.sub("", reason).replace("FATAL:  ", "")
    return without_password(reason, password if isinstance(password, str) else None)


# Where a password stands in libpq's text: a URL's userinfo (`scheme://user:PASSWORD@`) and a key=value
# connection string's `password=PASSWORD` (quoted or not). What stands there is masked, whatever it is.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s/@]*@", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]+"')  # a part of the URL libpq quotes
_KEY_PASSWORD = re.compile(r"(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s']\S*)", re.IGNORECASE)


def without_password(text: str, password: str | None) -> str:
    """`text` with the password masked where it stands as one: in a URL's userinfo, as a `password=`
    value, or as a whole value the message quotes (libpq's URL parser quotes the token it cannot read:
    `invalid percent-encoded token: "p%zz"`). Never inside other words: a password "e" left
    "Conn***ction r***fus***d" of "Connection refused"."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _KEY_PASSWORD.sub(r"\1***", text)
    if password:
        text = re.sub(rf"([\"']){re.escape(password)}\1", r"\1***\1", text)
    return text
