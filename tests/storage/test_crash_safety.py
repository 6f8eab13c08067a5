"""SIGKILL a process at random moments while it writes photos, predictions, feedback, captions and
/forgets, 20 times over the same data folder, on SQLite and on PostgreSQL (where every fourth kill
crashes the server too: stopped in `immediate` mode, recovered from its WAL at the restart). After every
kill: the database is intact, every photo row's bytes (and its cached file) are there and whole, no
write that was acknowledged is lost, and the next start leaves no temporary files and no half-done
/forget behind."""

from __future__ import annotations

import hashlib
import random

from benchmarks.storage import connect, integrity, run_crash_child
from tests.support.storage import open_store, rows

KILLS = 20
SERVER_CRASH_EVERY = 4


def check_database(data_dir, database) -> dict[str, set[int]]:
    checked, foreign_key_errors = integrity(database)  # PRAGMA integrity_check; PostgreSQL's amcheck
    assert checked == "ok"
    assert foreign_key_errors == 0
    db = connect(database)
    try:
        photos = db.execute(
            "SELECT p.sha256, p.path, b.data FROM photos p LEFT JOIN photo_bytes b ON b.sha256 = p.sha256"
        )
        for sha256, relative, data in photos:
            assert data is not None, f"photo row {sha256} has no bytes"
            assert hashlib.sha256(bytes(data)).hexdigest() == sha256, f"photo {sha256}'s bytes are not whole"
            image = data_dir / "images" / relative  # the cache of the machine that wrote it
            assert image.is_file(), f"photo row {sha256} has no file"
            assert hashlib.sha256(image.read_bytes()).hexdigest() == sha256, f"{image} is not whole"
        return {
            "P": {row[0] for row in db.execute("SELECT id FROM predictions")},
            "F": {row[0] for row in db.execute("SELECT prediction_id FROM feedback")},
            "C": {row[0] for row in db.execute("SELECT id FROM contributions")},
        }
    finally:
        db.close()


def lost_writes(acknowledged: list[str], stored: dict[str, set[int]]) -> list[str]:
    """Acknowledged lines whose row is missing; rows of users being forgotten may go on purpose."""
    forgetting = {line.split()[1] for line in acknowledged if line[0] in "xX"}
    return [
        line
        for line in acknowledged
        if line[0] in "PFC"
        and line.split()[-1] not in forgetting
        and int(line.split()[1]) not in stored[line[0]]
    ]


async def test_sigkill_at_random_moments_loses_and_breaks_nothing(tmp_path, database, request):
    server = request.getfixturevalue("postgres_server") if isinstance(database, str) else None
    rng = random.Random(2026)
    acknowledged_total = 0
    for kill in range(KILLS):
        crash_server = server is not None and kill % SERVER_CRASH_EVERY == SERVER_CRASH_EVERY - 1
        acknowledged = run_crash_child(
            tmp_path,
            seed=kill,
            kill_after_s=rng.uniform(0.02, 0.4),
            database=database,
            crash_server=server.crash if crash_server else None,
        )
        if crash_server:
            server.restart()
        acknowledged_total += len(acknowledged)
        stored = check_database(tmp_path, database)
        assert lost_writes(acknowledged, stored) == [], f"kill {kill}"

        store = await open_store(tmp_path, database)  # the next start
        try:
            assert store.images.leftover_temp_files() == []
            assert await store.global_stats() is not None
        finally:
            await store.close()
        assert rows(database, "SELECT count(*) FROM image_deletions") == [(0,)]
    assert acknowledged_total > KILLS  # the writer really was writing when it was killed
    final = check_database(tmp_path, database)
    assert len(final["P"]) > 0
