"""Taught models: the image models people create from the chat (`/newmodel`), kept in the database.

A row holds a model's name, its labels (JSON: `[{"name": "dog", "display": {"ru": "собака"}}, …]`),
who created it and when, and when it was deleted. Deleting only marks the row: the photos people
labelled for it stay in storage, and its name stays taken, so an old model's photos and versions can
never be mistaken for a new model's. `storage` knows nothing of the catalogue: the bot and the command
line turn these rows into catalogue entries (`inference.taught`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from storage.dialect import Connection
from storage.queries.state import note_change

CHANGES = "taught_models"  # the change counter every bot process follows (`Store.change_version`)


@dataclass(frozen=True)
class TaughtLabel:
    name: str
    display: Mapping[str, str] = field(default_factory=dict)  # language → shown name


@dataclass(frozen=True)
class TaughtModel:
    name: str
    labels: tuple[TaughtLabel, ...]
    created_by: int | None
    created_at: float
    deleted_at: float | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


class TaughtModelExists(ValueError):
    """The name is taken by a taught model (live or deleted)."""


class NoSuchTaughtModel(LookupError):
    """No live taught model has this name."""


class TaughtLabelsChanged(RuntimeError):
    """The model's labels are no longer the ones a change was made from."""


_COLUMNS = "name, labels, created_by, created_at, deleted_at"


def _model(row: Sequence[object]) -> TaughtModel:
    labels = tuple(
        TaughtLabel(str(item["name"]), dict(item.get("display") or {})) for item in json.loads(str(row[1]))
    )
    created_by = row[2]
    deleted_at = row[4]
    return TaughtModel(
        name=str(row[0]),
        labels=labels,
        created_by=int(created_by) if isinstance(created_by, int) else None,
        created_at=float(row[3]),  # type: ignore[arg-type]
        deleted_at=float(deleted_at) if isinstance(deleted_at, int | float) else None,
    )


def _labels_json(labels: Sequence[TaughtLabel]) -> str:
    return json.dumps(
        [{"name": label.name, "display": dict(label.display)} for label in labels], ensure_ascii=False
    )


def taught_models(db: Connection, *, deleted: bool = False) -> list[TaughtModel]:
    """The live taught models in the order they were created (with `deleted`, the deleted ones too).

    By creation time, then name: PostgreSQL has no rowid, and two creations in the same microsecond
    are named apart."""
    where = "" if deleted else "WHERE deleted_at IS NULL"
    return [
        _model(row)
        for row in db.execute(f"SELECT {_COLUMNS} FROM taught_models {where} ORDER BY created_at, name")
    ]


def get_taught_model(db: Connection, name: str) -> TaughtModel | None:
    """The live taught model `name`, or None."""
    row = db.execute(
        f"SELECT {_COLUMNS} FROM taught_models WHERE name = ? AND deleted_at IS NULL", (name,)
    ).fetchone()
    return _model(row) if row else None


def create_taught_model(
    db: Connection, name: str, labels: Sequence[TaughtLabel], created_by: int | None, now: float
) -> TaughtModel:
    if db.execute("SELECT 1 FROM taught_models WHERE name = ?", (name,)).fetchone():
        raise TaughtModelExists(name)
    db.execute(
        "INSERT INTO taught_models (name, labels, created_by, created_at) VALUES (?, ?, ?, ?)",
        (name, _labels_json(labels), created_by, now),
    )
    note_change(db, CHANGES)
    return TaughtModel(name, tuple(labels), created_by, now)


def set_taught_labels(
    db: Connection, name: str, labels: Sequence[TaughtLabel], expected: Sequence[str] | None = None
) -> TaughtModel:
    """Replace the labels of the live taught model `name` (adding or removing one). With `expected`
    (the label names the change was made from), only if the model still has those: another admin's
    change meanwhile (on another bot replica) raises TaughtLabelsChanged instead of being lost."""
    found = get_taught_model(db, name)
    if found is None:
        raise NoSuchTaughtModel(name)
    if expected is not None and found.label_names != tuple(expected):
        raise TaughtLabelsChanged(name)
    db.execute("UPDATE taught_models SET labels = ? WHERE name = ?", (_labels_json(labels), name))
    note_change(db, CHANGES)
    return TaughtModel(found.name, tuple(labels), found.created_by, found.created_at)


def delete_taught_model(db: Connection, name: str, now: float) -> bool:
    """Mark the live taught model `name` deleted; False when there was none."""
    cursor = db.execute(
        "UPDATE taught_models SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL", (now, name)
    )
    if cursor.rowcount == 0:
        return False
    note_change(db, CHANGES)
    return True
