"""Labels admins added to a built-in model from the chat (`/addlabel flowers lavender`), kept in the database.

A row holds the model, the label, who added it and when, and when it was removed (`/dellabel`).
Removing only marks the row: the photos people labelled stay in storage, and a model's next version
knows to leave a label out that an earlier version learned. Adding it again brings the row back.
`storage` knows nothing of the catalogue: the bot and the command line merge these rows into it
(`inference.taught.with_added_labels`), and every bot process follows a change as it follows the
taught models' (the same change counter, `storage.taught.CHANGES`). Write functions run inside their
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from storage.dialect import Connection
from storage.queries.state import note_change
from storage.taught import CHANGES

_COLUMNS = "model, label, added_by, added_at, removed_at"


@dataclass(frozen=True)
class AddedLabel:
    model: str
    label: str
    added_by: int | None  # user id; None for the command line
    added_at: float
    removed_at: float | None = None

    @property
    def removed(self) -> bool:
        return self.removed_at is not None


class LabelAlreadyAdded(ValueError):
    """The model has this added label already."""


def _row(row: Sequence[object]) -> AddedLabel:
    added_by, removed_at = row[2], row[4]
    return AddedLabel(
        model=str(row[0]),
        label=str(row[1]),
        added_by=int(added_by) if isinstance(added_by, int) else None,
        added_at=float(row[3]),  # type: ignore[arg-type]
        removed_at=float(removed_at) if isinstance(removed_at, int | float) else None,
    )


def added_labels(db: Connection, model: str | None = None) -> list[AddedLabel]:
    """Every label added to `model` (default: to any model), removed ones too, in the order added."""
    where, parameters = ("WHERE model = ?", (model,)) if model is not None else ("", ())
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM added_labels {where} ORDER BY added_at, model, label", parameters
    )
    return [_row(row) for row in rows]


def add_label(db: Connection, model: str, label: str, added_by: int | None, now: float) -> AddedLabel:
    """Add `label` to `model` (again, if it was removed); LabelAlreadyAdded when it is there."""
    found = db.execute(
        "SELECT removed_at FROM added_labels WHERE model = ? AND label = ?", (model, label)
    ).fetchone()
    if found is not None and found[0] is None:
        raise LabelAlreadyAdded(f"{model}: {label}")
    if found is None:
        db.execute(
            "INSERT INTO added_labels (model, label, added_by, added_at) VALUES (?, ?, ?, ?)",
            (model, label, added_by, now),
        )
    else:
        db.execute(
            """UPDATE added_labels SET added_by = ?, added_at = ?, removed_at = NULL
               WHERE model = ? AND label = ?""",
            (added_by, now, model, label),
        )
    note_change(db, CHANGES)
    return AddedLabel(model, label, added_by, now)


def remove_label(db: Connection, model: str, label: str, now: float) -> bool:
    """Mark the added label removed; False when `model` has no such label (never added, or removed)."""
    cursor = db.execute(
        "UPDATE added_labels SET removed_at = ? WHERE model = ? AND label = ? AND removed_at IS NULL",
        (now, model, label),
    )
    if cursor.rowcount == 0:
        return False
    note_change(db, CHANGES)
    return True
