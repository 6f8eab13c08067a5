"""`photobot db migrate --to postgresql://…`: an install's rows, photos and two model versions (the one
it serves included) copied; what it prints (a line per table, copied or already there); a second run
copies nothing; a bad URL or a refused target is one clear line."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from benchmarks.postgres_server import free_port
from inference.model_store import ModelStore
from photobot import cli
from storage import Store
from storage.model_registry import PostgresRegistry
from tests.support.storage import execute, label_photo, png

SECRET = "not-the-password-42"
SHIPPED_DIGITS = Path(__file__).resolve().parents[2] / "inference" / "shipped" / "digits"


@pytest.fixture
async def install(tmp_path, monkeypatch):
    """DATA_DIR holding a SQLite install with two labelled photos; DATABASE_URL unset."""
    data_dir = tmp_path / "data"
    store = await Store.open(data_dir / "photobot.sqlite3", data_dir / "images")
    try:
        await label_photo(store, user_id=1, message_id=1, image=png(1), true_label="3")
        await label_photo(store, user_id=2, message_id=1, image=png(2), true_label="4")
    finally:
        await store.close()
    # Two versions of the digit reader, the first one serving; the second has one more file.
    models = ModelStore(data_dir / "models")
    models.add_version("digits", SHIPPED_DIGITS, {"labels": [str(d) for d in range(10)]})
    second = tmp_path / "second"
    shutil.copytree(SHIPPED_DIGITS, second)
    (second / "notes.txt").write_text("retrained on the chat's photos\n")
    models.add_version("digits", second, {"labels": [str(d) for d in range(10)]})
    models.promote("digits", 1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return data_dir


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert "Traceback" not in error
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    return lines[0]


async def test_migrate_prints_a_line_per_table_and_a_second_run_copies_nothing(install, postgres_url, capsys):
    assert cli.main(["db", "migrate", "--to", postgres_url]) == 0
    first = capsys.readouterr().out.splitlines()
    assert "users: 2 copied, 0 already there" in first
    assert "photos: 2 copied, 0 already there" in first
    assert "photo_bytes: 2 copied, 0 already there" in first
    assert "predictions: 2 copied, 0 already there" in first
    assert "model versions: 2 copied, 0 already there" in first
    assert "serving pointers: 1 copied, 0 already there" in first
    assert any(
        line.startswith("verified: ") and "2 photos' bytes hash to their names" in line for line in first
    )
    assert first[-1].startswith("done: ")

    registry = PostgresRegistry(postgres_url)
    try:
        assert [meta["version"] for meta in registry.versions("digits")] == [1, 2]
        assert registry.active("digits") == 1
        assert sorted(registry.files("digits", 2)) == ["model.keras", "notes.txt"]
        # Another machine's model store serves them from the database, the same bytes.
        shared = ModelStore(install.parent / "elsewhere" / "models", registry=registry)
        for version in (1, 2):
            copy, here = shared.get("digits", version), ModelStore(install / "models").get("digits", version)
            assert copy.model_file.read_bytes() == here.model_file.read_bytes()
        assert shared.active("digits").version == 1
    finally:
        registry.close()

    assert cli.main(["db", "migrate", "--to", postgres_url]) == 0
    second = capsys.readouterr().out.splitlines()
    assert "users: 0 copied, 2 already there" in second
    assert "model versions: 0 copied, 2 already there" in second
    assert not [
        line for line in second if " copied, " in line and not line.split(": ")[1].startswith("0 copied")
    ]
    assert "done: 0 rows copied; set DATABASE_URL to the target to run on it" in second


async def test_a_wrong_password_is_one_line(install, postgres_server, capsys):
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{postgres_server.port}/postgres"
    assert cli.main(["db", "migrate", "--to", url]) == 1
    line = one_line_error(capsys)
    assert line.startswith("photobot db: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:")
    assert "password authentication failed" in line and SECRET not in line


async def test_a_password_found_in_the_servers_words_leaves_them_readable(install, capsys):
    # The password "e" is in "Connection refused": only where it stands as the password is it masked.
    port = free_port()
    assert cli.main(["db", "migrate", "--to", f"postgresql://u:e@127.0.0.1:{port}/db"]) == 1
    line = one_line_error(capsys)
    assert line == (
        f"photobot db: cannot connect to PostgreSQL at postgresql://u@127.0.0.1:{port}/db: "
        "Connection refused; Is the server running on that host and accepting TCP/IP connections?"
    )


async def test_a_target_that_is_not_postgresql_or_holds_other_rows_is_one_line(install, postgres_url, capsys):
    assert cli.main(["db", "migrate", "--to", "mysql://bot@db.example/photobot"]) == 1
    assert one_line_error(capsys).startswith("photobot db: the target must be a postgresql:// URL")

    assert cli.main(["db", "migrate", "--to", postgres_url]) == 0
    capsys.readouterr()
    execute(postgres_url, "UPDATE users SET language = 'xx' WHERE id = 2")
    assert cli.main(["db", "migrate", "--to", postgres_url]) == 1
    line = one_line_error(capsys)
    assert line.startswith(
        "photobot db: the target already holds different rows under the same keys (users: 1"
    )


async def test_migrations_started_at_once_into_one_target_each_finish(install, postgres_url):
    """Three `db migrate` runs at once: one copied and the others crashed with a raw UniqueViolation
    traceback. A run now waits for the one before it, then finds everything there."""
    from photobot.commands.db import local_models
    from storage.migration import migrate_install

    start = threading.Barrier(3)

    def migrate():
        start.wait()
        return migrate_install(
            install / "photobot.sqlite3",
            install / "images",
            postgres_url,
            say=lambda line: None,
            models=local_models(install / "models"),
        )

    reports = await asyncio.gather(*(asyncio.to_thread(migrate) for _ in range(3)))
    copied = sorted(report.copied for report in reports)
    assert copied[:2] == [0, 0] and copied[2] > 0
    assert sorted(report.models.versions_copied for report in reports if report.models) == [0, 0, 2]
