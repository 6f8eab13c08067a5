"""Migrations on PostgreSQL, as tests/storage/test_storage_schema.py pins them on SQLite: from an empty
database, from an older schema with data in it, refusal of a newer one, a failed migration undone,
processes starting together, and the write lock's timeout."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import psycopg
import pytest

from storage import SchemaTooNew
from storage.connect import open_database
from storage.postgres import WRITE_LOCK, connect
from storage.schema import LATEST, MIGRATIONS, migrate, schema_version
from tests.support.storage import open_store, png, rows


def tables(url) -> set[str]:
    return {
        row[0]
        for row in rows(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    }


def column_types(url, table) -> dict[str, str]:
    return dict(
        rows(
            url,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
            (table,),
        )
    )


async def test_an_empty_database_gets_the_latest_schema_with_64_bit_ids_and_double_times(
    postgres_url, tmp_path
):
    store = await open_store(tmp_path, postgres_url)
    await store.close()
    assert rows(postgres_url, "SELECT version FROM schema_version") == [(LATEST,)]
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
    } <= tables(postgres_url)
    users = column_types(postgres_url, "users")
    assert users["id"] == users["blocked"] == "bigint"
    assert users["first_seen"] == users["last_seen"] == "double precision"
    assert column_types(postgres_url, "predictions")["chat_id"] == "bigint"
    identity = rows(
        postgres_url,
        """SELECT table_name FROM information_schema.columns
           WHERE column_name = 'id' AND is_identity = 'YES' ORDER BY table_name""",
    )
    assert [row[0] for row in identity] == ["contributions", "model_events", "predictions", "retrain_jobs"]


def test_every_connection_checks_foreign_keys(postgres_url):
    db = open_database(postgres_url, busy_timeout_s=3)
    try:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            db.execute(
                "INSERT INTO feedback (prediction_id, user_id, verdict, model, true_label, created_at) "
                "VALUES (999, 1, 'correct', 'digits', '7', 0)"
            )
        assert db.execute("SHOW lock_timeout").fetchone()[0] == "3s"
    finally:
        db.close()


async def test_a_version_1_database_with_data_is_migrated_and_keeps_its_rows(postgres_url, tmp_path):
    old = connect(postgres_url)
    migrate(old, postgres_url, MIGRATIONS[:1])
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
    assert "retrain_jobs" not in tables(postgres_url)

    store = await open_store(tmp_path, postgres_url)
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
    postgres_url, tmp_path
):
    old = connect(postgres_url)
    migrate(old, postgres_url, MIGRATIONS[:3])
    for chat, mode, at in [(5, "digit", 1.0), (6, "flower", 2.0), (7, "auto", 3.0)]:
        old.execute("INSERT INTO chats (id, mode, updated_at) VALUES (?, ?, ?)", (chat, mode, at))
    with pytest.raises(psycopg.errors.CheckViolation):  # what version 3 refused
        old.execute("INSERT INTO chats (id, mode, updated_at) VALUES (8, 'pets', 4.0)")
    old.close()

    store = await open_store(tmp_path, postgres_url)
    try:
        assert store.schema_version == LATEST
        assert [await store.chat_mode(chat) for chat in (5, 6, 7, 8)] == ["digit", "flower", "auto", "auto"]
        await store.set_chat_mode(8, "pets")
        assert await store.chat_mode(8) == "pets"
    finally:
        await store.close()
    assert rows(postgres_url, "SELECT id, mode, updated_at FROM chats WHERE id < 8 ORDER BY id") == [
        (5, "digit", 1.0),
        (6, "flower", 2.0),
        (7, "auto", 3.0),
    ]
    db = connect(postgres_url)
    try:
        for bad in ("", "Pets", "x" * 21):  # the schema's own check, beside the code's
            with pytest.raises(psycopg.errors.CheckViolation):
                db.execute("INSERT INTO chats (id, mode, updated_at) VALUES (9, ?, 1.0)", (bad,))
    finally:
        db.close()


async def test_a_newer_database_is_refused_with_a_clear_message_and_left_untouched(postgres_url, tmp_path):
    newer = connect(postgres_url)
    newer.execute("CREATE TABLE schema_version (one BOOLEAN PRIMARY KEY, version BIGINT NOT NULL)")
    newer.execute("INSERT INTO schema_version VALUES (TRUE, ?)", (LATEST + 3,))
    newer.execute("CREATE TABLE future_things (x TEXT)")
    newer.close()
    before = tables(postgres_url)

    with pytest.raises(SchemaTooNew, match=rf"schema version {LATEST + 3}.*newer PhotoBot"):
        await open_store(tmp_path, postgres_url)

    assert tables(postgres_url) == before == {"schema_version", "future_things"}
    assert rows(postgres_url, "SELECT version FROM schema_version") == [(LATEST + 3,)]


def test_a_migration_that_fails_half_way_leaves_the_previous_version(postgres_url):
    db = connect(postgres_url)
    broken = (*MIGRATIONS[:1], ("CREATE TABLE half_done (x TEXT)", "THIS IS NOT SQL"))
    with pytest.raises(psycopg.errors.SyntaxError):
        migrate(db, postgres_url, broken)
    assert schema_version(db) == 1
    db.close()
    assert "half_done" not in tables(postgres_url)
    assert "users" in tables(postgres_url)


def test_migrating_twice_changes_nothing(postgres_url):
    first = open_database(postgres_url)
    first.execute("INSERT INTO users (id, first_seen, last_seen) VALUES (1, 0, 0)")
    first.close()
    second = open_database(postgres_url)
    assert schema_version(second) == LATEST
    assert second.execute("SELECT count(*) FROM users").fetchone()[0] == 1
    second.close()


async def test_reopening_keeps_everything(postgres_url, tmp_path):
    store = await open_store(tmp_path, postgres_url)
    photo = await store.add_photo(png(1), format="png")
    await store.close()
    store = await open_store(tmp_path, postgres_url)
    try:
        assert await store.get_photo(photo.sha256) == photo
    finally:
        await store.close()


def hold_the_write_lock(url):
    """Another process's writer, inside its transaction (as BEGIN IMMEDIATE leaves it)."""
    writer = psycopg.connect(url, autocommit=True)
    writer.execute("BEGIN")
    writer.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
    return writer


def test_opening_waits_for_a_writer_that_holds_the_write_lock(postgres_url):
    writer = hold_the_write_lock(postgres_url)
    release = threading.Timer(0.3, writer.execute, ["COMMIT"])
    release.start()
    try:
        db = open_database(postgres_url, busy_timeout_s=5)
    finally:
        release.join()
        writer.close()
    assert schema_version(db) == LATEST
    db.close()


def test_opening_gives_up_after_the_busy_timeout(postgres_url):
    writer = hold_the_write_lock(postgres_url)
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable):
            open_database(postgres_url, busy_timeout_s=0.2)
    finally:
        writer.close()


def test_processes_starting_together_migrate_once(postgres_url):
    script = (
        "import sys; from storage.connect import open_database; from storage.schema import schema_version; "
        "print(schema_version(open_database(sys.argv[1])))"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", script, postgres_url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [starter.communicate(timeout=60)[0].strip() for starter in starters]
    assert [starter.returncode for starter in starters] == [0, 0, 0, 0]
    assert outputs == [str(LATEST)] * 4
    assert rows(postgres_url, "SELECT count(*) FROM pg_tables WHERE tablename = 'users'") == [(1,)]
