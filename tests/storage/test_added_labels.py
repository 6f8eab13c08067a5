"""Labels added to a built-in model in the database: added, removed (the row stays, marked), added
again, kept across opens; the command line sees and adds them (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Store, SyncStore
from storage.added_labels import LabelAlreadyAdded
from storage.taught import CHANGES


async def test_an_added_label_is_kept_removed_and_added_again(tmp_path: Path, database: Path | str) -> None:
    store = await Store.open(database, tmp_path / "images")
    try:
        added = await store.add_model_label("flowers", "lavender", 7)
        assert (added.model, added.label, added.added_by, added.removed) == ("flowers", "lavender", 7, False)
        await store.add_model_label("flowers", "iris", 8)
        with pytest.raises(LabelAlreadyAdded):
            await store.add_model_label("flowers", "lavender", 8)
    finally:
        await store.close()

    store = await Store.open(database, tmp_path / "images")  # a restart keeps them
    try:
        assert [(a.label, a.removed) for a in await store.added_labels("flowers")] == [
            ("lavender", False),
            ("iris", False),
        ]
        assert await store.remove_model_label("flowers", "lavender") is True
        assert await store.remove_model_label("flowers", "lavender") is False
        assert await store.remove_model_label("flowers", "daisy") is False  # never added
        assert [(a.label, a.removed) for a in await store.added_labels()] == [
            ("lavender", True),
            ("iris", False),
        ]
        again = await store.add_model_label("flowers", "lavender", 9)
        assert again.added_by == 9 and not again.removed
        assert [(a.label, a.removed) for a in await store.added_labels("flowers")] == [
            ("iris", False),
            ("lavender", False),
        ]
        assert await store.added_labels("digits") == []
        # Every change moves the counter the other bot processes follow (they then read the labels again).
        counted = await store.change_version(CHANGES)
        await store.remove_model_label("flowers", "iris")
        assert await store.change_version(CHANGES) == counted + 1
        await store.remove_model_label("flowers", "iris")  # nothing changed
        assert await store.change_version(CHANGES) == counted + 1
    finally:
        await store.close()


def test_the_command_line_sees_and_adds_labels(tmp_path: Path, database: Path | str) -> None:
    with SyncStore(database, tmp_path / "images") as store:
        store.add_model_label("flowers", "lavender")
        with pytest.raises(LabelAlreadyAdded):
            store.add_model_label("flowers", "lavender")
        assert [(a.model, a.label, a.added_by) for a in store.added_labels()] == [
            ("flowers", "lavender", None)
        ]
