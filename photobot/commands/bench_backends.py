"""The database backends a benchmark runs on: `--backend sqlite|postgresql|both` (not a bench target).

`photobot bench storage` and `photobot bench bot` share it. SQLite is a file in the run's temporary
folder; PostgreSQL is one throwaway server for the whole run (`benchmarks.postgres_server`: `initdb` in a
temporary folder, a free port on 127.0.0.1, fsync on, as the tests start it), started when the first
database is asked for and removed when the run ends, however it ends; each thing that writes gets a fresh
database on it.
"""

from __future__ import annotations

import argparse
from types import TracebackType
from typing import TYPE_CHECKING

from photobot.errors import UserFacingError

if TYPE_CHECKING:
    from benchmarks.postgres_server import PostgresServer

BACKENDS = ("sqlite", "postgresql")
CHOICES = (*BACKENDS, "both")


def add_backend_option(parser: argparse.ArgumentParser, *, default: str | None, help_text: str) -> None:
    parser.add_argument("--backend", choices=CHOICES, default=default, help=help_text)


def chosen(backend: str) -> tuple[str, ...]:
    """The backends to measure, in the order of the first round: `both` is SQLite, then PostgreSQL."""
    return BACKENDS if backend == "both" else (backend,)


class ThrowawayPostgres:
    """Fresh databases on one throwaway PostgreSQL server, started at the first `database()`; leaving
    the `with` stops the server and deletes its folder."""

    def __init__(self) -> None:
        self.server: PostgresServer | None = None

    def database(self) -> str:
        """A new, empty database on the server (started now if it is not yet): its URL."""
        if self.server is None:
            from benchmarks.postgres_server import PostgresServer, PostgresUnavailable

            try:
                self.server = PostgresServer.start()
            except PostgresUnavailable as error:
                raise UserFacingError(f"no throwaway PostgreSQL server for the run: {error}") from None
        return self.server.create_database()

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
