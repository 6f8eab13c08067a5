"""SIGKILL a process at random moments while it writes photos, predictions, feedback, captions and
/forgets, 20 times over the same data folder. After every kill: the database is intact, every photo
row's file is there and whole, no write that was acknowledged is lost, and the next start leaves no
temporary files and no half-done /forget behind."""

from __future__ import annotations

import hashlib
import random
import sqlite3

from benchmarks.storage import run_crash_child
from tests.support.storage import open_store

KILLS = 20


def check_database(data_dir) -> dict[str, set[int]]:
    db = sqlite3.connect(data_dir / "photobot.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        for sha256, relative in db.execute("SELECT sha256, path FROM photos"):
            image = data_dir / "images" / relative
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


async def test_sigkill_at_random_moments_loses_and_breaks_nothing(tmp_path):
    rng = random.Random(2026)
    acknowledged_total = 0
    for kill in range(KILLS):
        acknowledged = run_crash_child(tmp_path, seed=kill, kill_after_s=rng.uniform(0.02, 0.4))
        acknowledged_total += len(acknowledged)
        stored = check_database(tmp_path)
        assert lost_writes(acknowledged, stored) == [], f"kill {kill}"

        store = await open_store(tmp_path)  # the next start
        try:
            assert store.images.leftover_temp_files() == []
            assert await store.global_stats() is not None
        finally:
            await store.close()
        db = sqlite3.connect(tmp_path / "photobot.sqlite3")
        assert db.execute("SELECT count(*) FROM image_deletions").fetchone()[0] == 0
        db.close()
    assert acknowledged_total > KILLS  # the writer really was writing when it was killed
    final = check_database(tmp_path)
    assert len(final["P"]) > 0
