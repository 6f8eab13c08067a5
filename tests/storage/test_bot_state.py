"""What the bot keeps between updates, in the database: per-user flood windows and change counters.

Several bot processes may share one database; these tests open two stores on one database, as two
processes do, on both backends (the `database` fixture).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage import Store, SyncStore
from storage.taught import CHANGES, TaughtLabel


async def test_a_users_updates_count_in_one_window_until_it_closes(database, tmp_path: Path) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        counted = [await store.count_update(7, "updates", now=100.0 + i, window_s=60) for i in range(3)]
        assert [(w.start, w.count) for w in counted] == [(100.0, 1), (100.0, 2), (100.0, 3)]
        other = await store.count_update(7, "photos", now=102.5, window_s=60)
        assert (other.start, other.count) == (102.5, 1)  # each limit counts on its own
        late = await store.count_update(7, "updates", now=159.9, window_s=60)
        assert (late.start, late.count) == (100.0, 4)
        reopened = await store.count_update(7, "updates", now=160.0, window_s=60)
        assert (reopened.start, reopened.count) == (160.0, 1)  # the old window closed at 160


async def test_two_stores_on_one_database_count_one_window_together(database, tmp_path: Path) -> None:
    first = await Store.open(database, tmp_path / "images")
    second = await Store.open(database, tmp_path / "images")
    try:
        windows = await asyncio.gather(
            *(store.count_update(42, "updates", now=1000.0, window_s=60) for store in [first, second] * 25)
        )
    finally:
        await first.close()
        await second.close()
    assert sorted(window.count for window in windows) == list(range(1, 51))  # none lost, none twice


async def test_closed_windows_are_swept_so_the_table_does_not_grow(database, tmp_path: Path) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        for user in range(100):
            await store.count_update(user, "updates", now=1000.0 + user / 10, window_s=60)
        assert await store.flood_windows() == 100
        await store.count_update(5000, "photos", now=1065.05, window_s=60)  # users 0-50's windows closed
        assert await store.flood_windows() == 50  # users 51-99's, and the new one


async def test_every_change_to_the_taught_models_raises_their_change_counter(
    database, tmp_path: Path
) -> None:
    async with await Store.open(database, tmp_path / "images") as store:
        assert await store.change_version(CHANGES) == 0
        await store.create_taught_model("pets", [TaughtLabel("dog"), TaughtLabel("cat")], 7)
        assert await store.change_version(CHANGES) == 1
        await store.set_taught_labels("pets", [TaughtLabel("dog"), TaughtLabel("cat"), TaughtLabel("fox")])
        assert await store.delete_taught_model("pets") is True
        assert await store.change_version(CHANGES) == 3
        assert await store.delete_taught_model("pets") is False  # nothing changed
        assert await store.change_version(CHANGES) == 3
    with SyncStore(database, tmp_path / "images") as sync:  # the command line's changes count too
        sync.create_taught_model("insects", [TaughtLabel("ant"), TaughtLabel("bee")])
    async with await Store.open(database, tmp_path / "images") as store:
        assert await store.change_version(CHANGES) == 4
