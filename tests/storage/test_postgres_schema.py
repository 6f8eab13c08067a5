"""Migrations on PostgreSQL where it differs from SQLite: 64-bit ids and double-precision times, the
connection's settings, refusal of a newer schema, and the write lock's timeout. What both engines do alike
(older schemas with data in them, a failed migration undone, processes starting together) is pinned on
both in tests/storage/test_storage_schema.py."""

from __future__ import annotations

import threading

import psycopg
import pytest

from storage import SchemaTooNew
from storage.connect import open_database
from storage.postgres import WRITE_LOCK, connect
from storage.schema import LATEST, schema_version
from tests.storage.test_storage_schema import tables
from tests.support.storage import open_store, rows


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
    assert [row[0] for row in identity] == [
        "contributions",
        "forgotten_photos",
        "model_events",
        "predictions",
        "retrain_jobs",
    ]


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
