"""The throwaway PostgreSQL server of the test session, and a fresh database per test.

`postgres_server` starts one cluster for the session (benchmarks.postgres_server: initdb in a temporary
folder, a free port, fsync on) and removes it at the end; `postgres_url` is a new empty database for one
test, dropped after it; `database` is either backend for a storage test: a SQLite file in `tmp_path` or
a fresh PostgreSQL database (`@pytest.mark.parametrize` is applied by the fixture's params). A missing
PostgreSQL is a failure, never a skip: `make test` installs it (`make postgres`).

tests/conftest.py imports these fixtures, so every test room can use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.postgres_server import PostgresServer, PostgresUnavailable

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole session."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        pytest.fail(f"the PostgreSQL tests need a server: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (its URL), dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend, "sqlite" or "postgresql": a test that takes it (or `database`) runs once on each."""
    return str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where a storage test keeps its rows: `tmp_path/photobot.sqlite3`, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return tmp_path / "photobot.sqlite3"
    return str(request.getfixturevalue("postgres_url"))
