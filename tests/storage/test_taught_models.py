"""Taught models in the database: created, relabelled, deleted (the name stays taken), kept across opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Store, SyncStore
from storage.taught import TaughtLabel, TaughtLabelsChanged, TaughtModelExists


async def test_a_taught_model_is_kept_relabelled_and_deleted_with_its_name_taken(
    tmp_path: Path, database: Path | str
) -> None:
    store = await Store.open(database, tmp_path / "images")
    try:
        made = await store.create_taught_model(
            "pets", [TaughtLabel("dog", {"ru": "собака"}), TaughtLabel("cat")], 7
        )
        assert made.label_names == ("dog", "cat") and made.created_by == 7
        await store.set_taught_labels("pets", [*made.labels, TaughtLabel("bird")])
        with pytest.raises(TaughtModelExists):
            await store.create_taught_model("pets", [TaughtLabel("a"), TaughtLabel("b")], 7)
    finally:
        await store.close()

    store = await Store.open(database, tmp_path / "images")  # a restart keeps it
    try:
        (pets,) = await store.taught_models()
        assert pets.label_names == ("dog", "cat", "bird")
        assert pets.labels[0].display == {"ru": "собака"} and pets.deleted_at is None
        assert await store.delete_taught_model("pets") is True
        assert await store.delete_taught_model("pets") is False
        assert await store.taught_models() == []
        (deleted,) = await store.taught_models(deleted=True)
        assert deleted.name == "pets" and deleted.deleted_at is not None
        with pytest.raises(TaughtModelExists):  # a deleted model's photos must not join a new one
            await store.create_taught_model("pets", [TaughtLabel("a"), TaughtLabel("b")], 7)
    finally:
        await store.close()


async def test_labels_changed_meanwhile_are_not_overwritten(tmp_path: Path, database: Path | str) -> None:
    """Two admins on two bot replicas each add a label from the labels their replica knew: the second
    write would have dropped the first one's label."""
    store = await Store.open(database, tmp_path / "images")
    try:
        made = await store.create_taught_model("zoo", [TaughtLabel("ant"), TaughtLabel("bee")], 7)
        await store.set_taught_labels("zoo", [*made.labels, TaughtLabel("cat")], expected=("ant", "bee"))
        with pytest.raises(TaughtLabelsChanged):
            await store.set_taught_labels("zoo", [*made.labels, TaughtLabel("dog")], expected=("ant", "bee"))
        (zoo,) = await store.taught_models()
        assert zoo.label_names == ("ant", "bee", "cat")
    finally:
        await store.close()


def test_the_command_line_sees_and_creates_taught_models(tmp_path: Path, database: Path | str) -> None:
    with SyncStore(database, tmp_path / "images") as store:
        store.create_taught_model("insects", [TaughtLabel("ant"), TaughtLabel("bee")])
        store.set_taught_labels("insects", [TaughtLabel("ant"), TaughtLabel("bee"), TaughtLabel("wasp")])
        assert [(m.name, m.label_names, m.created_by) for m in store.taught_models()] == [
            ("insects", ("ant", "bee", "wasp"), None)
        ]
