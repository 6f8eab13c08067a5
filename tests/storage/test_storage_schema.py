"""Migrations: from an empty file, from an older schema with data in it, and refusal of a newer one.

The tests that take `database` run on SQLite and on PostgreSQL; what only one engine has (WAL, pragmas,
the lock a rollback-mode writer holds) is pinned here for SQLite and in test_postgres_schema.py for
PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading

import psycopg
import pytest

from storage import SchemaTooNew
from storage.connect import open_database
from storage.dialect import Connection, Database, is_postgres_url
from storage.postgres import connect
from storage.schema import LATEST, MIGRATIONS, migrate, schema_version
from tests.support.storage import open_store, png, rows

# What each engine raises for a statement the schema refuses, and for SQL it cannot parse.
REFUSED = {"sqlite": sqlite3.IntegrityError, "postgresql": psycopg.errors.CheckViolation}
NOT_SQL = {"sqlite": sqlite3.OperationalError, "postgresql": psycopg.errors.SyntaxError}


def tables(database: Database) -> set[str]:
    if is_postgres_url(database):
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {row[0] for row in rows(database, query)}


def unmigrated(database: Database) -> Connection:
    """A connection with no schema applied, as an older PhotoBot opened the database."""
    if is_postgres_url(database):
        return connect(str(database))
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    return db


async def test_an_empty_folder_gets_the_latest_schema_in_wal_mode(tmp_path):
    store = await open_store(tmp_path)
    await store.close()
    db = sqlite3.connect(tmp_path / "photobot.sqlite3")
    assert schema_version(db) == LATEST == 13
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert {
        "users",
        "photos",
        "predictions",
        "feedback",
        "contributions",
        "chats",
        "retrain_jobs",
        "pending_corrections",
        "taught_models",
    } <= tables(tmp_path / "photobot.sqlite3")


def test_every_connection_has_foreign_keys_full_sync_and_a_busy_timeout(tmp_path):
    db = open_database(tmp_path / "db.sqlite3", busy_timeout_s=3)
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 3000
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO feedback (prediction_id, user_id, verdict, model, true_label, created_at) "
            "VALUES (999, 1, 'correct', 'digits', '7', 0)"
        )
    db.close()


async def test_a_version_1_database_with_data_is_migrated_and_keeps_its_rows(database, tmp_path):
    old = unmigrated(database)
    migrate(old, database, MIGRATIONS[:1])
    assert schema_version(old) == 1
    old.execute("INSERT INTO users (id, language, first_seen, last_seen) VALUES (5, 'ru', 1, 2)")
    sha = hashlib.sha256(b"old photo").hexdigest()
    old.execute(
        "INSERT INTO photos (sha256, size, path, first_seen) VALUES (?, 9, ?, 1)", (sha, f"{sha[:2]}/{sha}")
    )
    old.execute(
        "INSERT INTO predictions (user_id, chat_id, message_id, photo_sha256, model, version, label, "
        "confidence, probabilities, status, created_at) "
        "VALUES (5, 5, 1, ?, 'digits', 1, '4', 0.8, '[[\"4\", 0.8]]', 'ok', 3)",
        (sha,),
    )
    old.close()
    assert "retrain_jobs" not in tables(database)

    store = await open_store(tmp_path, database)
    try:
        assert store.schema_version == LATEST
        user = await store.get_user(5)
        assert user is not None and user.language == "ru"
        prediction = await store.get_prediction(1)
        assert prediction is not None and prediction.label == "4" and prediction.probabilities == [("4", 0.8)]
        result = await store.record_feedback(1, user_id=5, verdict="correct")
        assert result.created and result.feedback.true_label == "4"
        await store.set_chat_mode(5, "digit")  # a table from migration 2
        assert await store.chat_mode(5) == "digit"
    finally:
        await store.close()


async def test_a_version_3_database_keeps_its_chat_modes_and_then_stores_any_models_mode(
    database, backend, tmp_path
):
    """Migration 4 rebuilds `chats` so a catalogue model's mode ("pets") fits: the old rows come along."""
    old = unmigrated(database)
    migrate(old, database, MIGRATIONS[:3])
    assert schema_version(old) == 3
    for chat, mode, at in [(5, "digit", 1.0), (6, "flower", 2.0), (7, "auto", 3.0)]:
        old.execute("INSERT INTO chats (id, mode, updated_at) VALUES (?, ?, ?)", (chat, mode, at))
    with pytest.raises(REFUSED[backend]):  # what version 3 refused
        old.execute("INSERT INTO chats (id, mode, updated_at) VALUES (8, 'pets', 4.0)")
    old.close()

    store = await open_store(tmp_path, database)
    try:
        assert store.schema_version == LATEST == 13
        assert [await store.chat_mode(chat) for chat in (5, 6, 7, 8)] == ["digit", "flower", "auto", "auto"]
        await store.set_chat_mode(8, "pets")
        assert await store.chat_mode(8) == "pets"
    finally:
        await store.close()
    assert rows(database, "SELECT id, mode, updated_at FROM chats WHERE id < 8 ORDER BY id") == [
        (5, "digit", 1.0),
        (6, "flower", 2.0),
        (7, "auto", 3.0),
    ]
    db = unmigrated(database)
    try:
        for bad in ("", "Pets", "x" * 21):  # the schema's own check, beside the code's
            with pytest.raises(REFUSED[backend]):
                db.execute("INSERT INTO chats (id, mode, updated_at) VALUES (9, ?, 1.0)", (bad,))
    finally:
        db.close()


async def test_a_newer_database_is_refused_with_a_clear_message_and_left_untouched(tmp_path):
    path = tmp_path / "photobot.sqlite3"
    newer = sqlite3.connect(path)
    newer.execute("CREATE TABLE future_things (x)")
    newer.execute(f"PRAGMA user_version = {LATEST + 3}")
    newer.commit()
    newer.close()
    before = path.read_bytes()
    threads = set(threading.enumerate())

    with pytest.raises(SchemaTooNew, match=rf"schema version {LATEST + 3}.*newer PhotoBot"):
        await open_store(tmp_path)

    assert path.read_bytes() == before
    # nor a connection's thread that would answer after the event loop has closed
    assert not [t for t in set(threading.enumerate()) - threads if "_connection_worker_thread" in t.name]
    assert (
        not (tmp_path / "photobot.sqlite3-wal").exists()
        or (tmp_path / "photobot.sqlite3-wal").stat().st_size == 0
    )


def test_a_migration_that_fails_half_way_leaves_the_previous_version(database, backend):
    db = unmigrated(database)
    broken = (*MIGRATIONS[:1], ("CREATE TABLE half_done (x TEXT)", "THIS IS NOT SQL"))
    with pytest.raises(NOT_SQL[backend]):
        migrate(db, database, broken)
    assert schema_version(db) == 1
    db.close()
    assert "half_done" not in tables(database)
    assert "users" in tables(database)


def test_migrating_twice_changes_nothing(database):
    first = open_database(database)
    first.execute("INSERT INTO users (id, first_seen, last_seen) VALUES (1, 0, 0)")
    first.close()
    second = open_database(database)
    assert schema_version(second) == LATEST
    assert second.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    second.close()


async def test_reopening_keeps_everything(database, tmp_path):
    store = await open_store(tmp_path, database)
    photo = await store.add_photo(png(1), format="png")
    await store.close()
    store = await open_store(tmp_path, database)
    try:
        assert await store.get_photo(photo.sha256) == photo
    finally:
        await store.close()


def test_opening_waits_for_a_writer_that_holds_the_file_in_rollback_mode(tmp_path):
    # SQLite refuses the switch to WAL at once, without the busy handler, while another connection
    # holds a write lock on a file still in rollback mode: what processes starting together meet.
    path = tmp_path / "photobot.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other_process (x)")
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, writer.execute, ["COMMIT"])
    release.start()
    try:
        db = open_database(path, busy_timeout_s=5)
    finally:
        release.join()
        writer.close()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema_version(db) == LATEST
    db.close()


def test_opening_gives_up_after_the_busy_timeout(tmp_path):
    path = tmp_path / "photobot.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE other_process (x)")
    writer.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            open_database(path, busy_timeout_s=0.2)
    finally:
        writer.close()


def test_processes_starting_together_migrate_once(database):
    script = (
        "import sys; from storage.connect import open_database; from storage.schema import schema_version; "
        "print(schema_version(open_database(sys.argv[1])))"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", script, str(database)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [starter.communicate(timeout=60)[0].strip() for starter in starters]
    assert [starter.returncode for starter in starters] == [0, 0, 0, 0]
    assert outputs == [str(LATEST)] * 4
    if is_postgres_url(database):
        assert rows(database, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'") == [(1,)]
    else:
        assert rows(database, "SELECT count(*) FROM sqlite_master WHERE name = 'users'") == [(1,)]
