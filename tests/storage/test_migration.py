"""`photobot db migrate`: a real SQLite install (photos, answers, feedback, captions, a taught model, a
job, model events) copied into a fresh database on the test server, verified, and idempotent; a killed
run finishes when run again; a target with other rows under the same keys, or a newer schema, is refused
untouched."""

from __future__ import annotations

import pytest

from storage import SchemaTooNew, Store, SyncStore
from storage.connect import open_database
from storage.migration import MigrationRefused, migrate_install, source_tables
from storage.migration_models import LocalModels, LocalModelVersion
from tests.support.storage import execute, label_photo, png, predict, rows


async def make_install(data_dir) -> list[str]:
    """An install as the bot leaves it; returns its photos' hashes."""
    store = await Store.open(data_dir / "photobot.sqlite3", data_dir / "images")
    try:
        await label_photo(store, user_id=1, message_id=1, image=png(1), true_label="3")
        await label_photo(store, user_id=2, message_id=1, image=png(2), true_label="7")
        shared = await predict(store, user_id=2, message_id=2, image=png(1))  # the same photo again
        photo = await store.add_photo(png(3))
        await store.record_contribution(
            user_id=3, chat_id=3, message_id=1, photo_sha256=photo.sha256, model="digits", label="5"
        )
        await store.set_chat_mode(1, "digit")
        await store.set_blocked(4, True)
        await store.ask_for_number(2, shared, chat_id=2, answer_message_id=10, question_message_id=11)
        job = await store.create_retrain_job("digits", requested_by=1, chat_id=1, message_id=50)
        await store.finish_retrain_job(job.id, status="rejected", reason="not better")
        await store.record_model_event("digits", "promote", from_version=1, to_version=2, job_id=job.id)
        hashes = [
            row[0] for row in await store._read(lambda db: db.execute("SELECT sha256 FROM photos").fetchall())
        ]
    finally:
        await store.close()
    with SyncStore(data_dir / "photobot.sqlite3", data_dir / "images") as sync:
        sync.create_taught_model("pets", [])
    # A photo stored before the bytes were kept in the database: its only copy is its file.
    execute(data_dir / "photobot.sqlite3", "DELETE FROM photo_bytes WHERE sha256 = ?", (photo.sha256,))
    return sorted(hashes)


def table_rows(database, table, sqlite) -> list[tuple]:
    """A table's rows in key order (its columns as the SQLite install has them)."""
    db = open_database(sqlite)
    try:
        found = next(t for t in source_tables(db) if t.name == table)
    finally:
        db.close()
    select = f"SELECT {', '.join(found.columns)} FROM {table} ORDER BY {', '.join(found.key)}"
    return [
        tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows(database, select)
    ]


def run(data_dir, target, **kwargs):
    said: list[str] = []
    report = migrate_install(
        data_dir / "photobot.sqlite3", data_dir / "images", target, say=said.append, **kwargs
    )
    return report, said


async def test_an_install_is_copied_verified_and_served_from_postgresql(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    hashes = await make_install(data_dir)
    sqlite = data_dir / "photobot.sqlite3"

    report, said = run(data_dir, postgres_url)

    tables = [t.name for t in source_tables(open_database(sqlite))]
    assert {"users", "photos", "photo_bytes", "predictions", "feedback", "contributions", "chats"} <= set(
        tables
    )
    assert [line.split(":")[0] for line in said if " copied, " in line] == tables
    for table in set(tables) - {"photo_bytes"}:  # one photo's bytes were only a file in the install
        assert table_rows(postgres_url, table, sqlite) == table_rows(sqlite, table, sqlite), table
    assert [r[0] for r in rows(postgres_url, "SELECT sha256 FROM photo_bytes ORDER BY sha256")] == hashes
    assert report.photos_checked == len(hashes) == 3
    assert all(t.source_sha256 == t.target_sha256 for t in report.tables)
    assert said[-1].startswith(f"verified: {len(tables)} tables")

    # Another machine on the target: the photos come from the database, the labelled set matches,
    # and new rows get ids after the copied ones.
    store = await Store.open(postgres_url, tmp_path / "elsewhere" / "images")
    try:
        read = {await store.read_photo(sha256) for sha256 in hashes}
        assert read == {png(1), png(2), png(3)}
        copied = await store.labelled_set("digits")
        assert [(e.sha256, e.label) for e in copied.examples] == [
            (e.sha256, e.label)
            for e in SyncStore(sqlite, data_dir / "images").labelled_set("digits").examples
        ]
        new_id = await predict(store, user_id=9, message_id=1, image=png(9))
        assert new_id > max(r[0] for r in rows(sqlite, "SELECT id FROM predictions"))
        assert (await store.active_retrain_job()) is None
        assert [m.name for m in await store.taught_models()] == ["pets"]
    finally:
        await store.close()


async def test_running_it_again_changes_nothing(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    await make_install(data_dir)
    first, _ = run(data_dir, postgres_url)
    sqlite = data_dir / "photobot.sqlite3"
    before = {t.table: table_rows(postgres_url, t.table, sqlite) for t in first.tables}
    sequence = rows(
        postgres_url, "SELECT pg_sequence_last_value(pg_get_serial_sequence('predictions', 'id'))"
    )

    again, said = run(data_dir, postgres_url)

    assert again.copied == 0
    assert all(t.already == t.rows for t in again.tables)
    assert [line for line in said if " copied, " in line] == [
        f"{t.table}: 0 copied, {t.rows} already there" for t in again.tables
    ]
    assert {t.table: table_rows(postgres_url, t.table, sqlite) for t in again.tables} == before
    assert (
        rows(postgres_url, "SELECT pg_sequence_last_value(pg_get_serial_sequence('predictions', 'id'))")
        == sequence
    )
    assert again.sequences == []


async def test_a_run_killed_half_way_finishes_when_run_again(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    await make_install(data_dir)

    class Killed(Exception):
        pass

    def die_after_photos(line: str) -> None:
        if line.startswith("photos:"):
            raise Killed

    with pytest.raises(Killed):
        migrate_install(
            data_dir / "photobot.sqlite3", data_dir / "images", postgres_url, say=die_after_photos
        )
    assert rows(postgres_url, "SELECT count(*) FROM photos") == [(3,)]
    assert rows(postgres_url, "SELECT count(*) FROM predictions") == [(0,)]
    # ...and a batch of a table committed, the rest not.
    report, _ = run(data_dir, postgres_url)
    execute(
        postgres_url, "DELETE FROM feedback WHERE prediction_id = (SELECT max(prediction_id) FROM feedback)"
    )

    again, said = run(data_dir, postgres_url)

    assert [t.copied for t in again.tables if t.table == "feedback"] == [1]
    assert sum(t.copied for t in report.tables) > 0
    assert said[-1].startswith("verified:")


async def test_a_target_with_other_rows_under_the_same_keys_is_refused_untouched(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    await make_install(data_dir)
    open_database(postgres_url).close()  # the schema, then someone else's user 1
    execute(postgres_url, "INSERT INTO users (id, language, first_seen, last_seen) VALUES (1, 'xx', 1, 1)")

    with pytest.raises(
        MigrationRefused, match=r"different rows under the same keys \(users: 1 rows, e\.g\. key \(1,\)\)"
    ):
        run(data_dir, postgres_url)

    assert rows(postgres_url, "SELECT count(*) FROM users") == [(1,)]
    assert rows(postgres_url, "SELECT count(*) FROM photos") == [(0,)]


async def test_a_target_with_a_newer_schema_is_refused_untouched(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    await make_install(data_dir)
    open_database(postgres_url).close()
    execute(postgres_url, "UPDATE schema_version SET version = version + 5")

    with pytest.raises(SchemaTooNew, match="newer PhotoBot"):
        run(data_dir, postgres_url)
    assert rows(postgres_url, "SELECT count(*) FROM users") == [(0,)]


async def test_a_photo_with_no_bytes_anywhere_is_refused_before_anything_is_written(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    hashes = await make_install(data_dir)
    execute(data_dir / "photobot.sqlite3", "DELETE FROM photo_bytes")
    for sha256 in hashes[:2]:
        (data_dir / "images" / sha256[:2] / sha256).unlink()

    with pytest.raises(
        MigrationRefused, match="2 photos have neither bytes in the database nor an intact file"
    ):
        run(data_dir, postgres_url)
    assert rows(postgres_url, "SELECT count(*) FROM users") == [(0,)]


def test_the_target_must_be_postgresql(tmp_path):
    (tmp_path / "photobot.sqlite3").touch()
    with pytest.raises(MigrationRefused, match="must be a postgresql:// URL"):
        migrate_install(tmp_path / "photobot.sqlite3", tmp_path / "images", str(tmp_path / "other.sqlite3"))


def two_versions(folder) -> LocalModels:
    """A model store's two versions of "pets" (the first serving), as the command line reads them."""
    versions = []
    for number in (1, 2):
        (folder / f"v{number}").mkdir(parents=True)
        model = folder / f"v{number}" / "model.keras"
        model.write_bytes(b"weights %d" % number)
        versions.append(LocalModelVersion("pets", number, {"labels": ["cat", "dog"]}, {"model.keras": model}))
    return LocalModels(versions, {"pets": 1})


async def test_model_versions_keep_their_numbers_and_a_different_one_is_refused(tmp_path, postgres_url):
    data_dir = tmp_path / "data"
    await make_install(data_dir)
    models = two_versions(tmp_path / "models")

    report, said = run(data_dir, postgres_url, models=models)

    assert "model versions: 2 copied, 0 already there" in said and report.models.files_checked == 2
    assert rows(postgres_url, "SELECT name, version FROM model_versions ORDER BY version") == [
        ("pets", 1),
        ("pets", 2),
    ]
    assert rows(postgres_url, "SELECT name, version FROM model_serving") == [("pets", 1)]
    _, said = run(data_dir, postgres_url, models=models)
    assert (
        "model versions: 0 copied, 2 already there" in said
        and "serving pointers: 0 copied, 1 already there" in said
    )

    models.versions[1].files["model.keras"].write_bytes(b"retrained elsewhere")
    with pytest.raises(MigrationRefused, match=r"pets v2 has other files in the target"):
        run(data_dir, postgres_url, models=models)
