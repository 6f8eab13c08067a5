"""Helpers for the storage tests (imported by tests/test_storage*.py, test_export*.py, test_crash_safety.py).

Real SQLite files (or a real PostgreSQL database: the `database` fixture, tests/support/postgres.py) and
real image files in `tmp_path`; photos are real PNGs drawn with Pillow.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from storage import Store
from storage.dialect import Database, is_postgres_url


def png(seed: int, size: int = 8) -> bytes:
    """A small real PNG, different for every seed."""
    image = Image.new("L", (size, size), color=seed % 256)
    image.putpixel((0, 0), (seed // 256) % 256)
    image.putpixel((1, 0), (seed // 65536) % 256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def open_store(folder: Path, database: Database | None = None) -> Store:
    """The store of `folder` (images in folder/images), on `database` (default folder/photobot.sqlite3)."""
    return await Store.open(database or folder / "photobot.sqlite3", folder / "images")


def rows(database: Database, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """What a fresh connection, outside the store, reads (`?` placeholders on both backends)."""
    return execute(database, sql, params)


def execute(database: Database, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction on a fresh connection; return its rows (if any)."""
    if is_postgres_url(database):
        from storage.postgres import connect

        pg = connect(str(database))
        try:
            cursor = pg.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            pg.close()
    db = sqlite3.connect(database)
    try:
        with db:
            return db.execute(sql, params).fetchall()
    finally:
        db.close()


async def predict(
    store: Store,
    *,
    user_id: int,
    message_id: int,
    image: bytes,
    model: str | None = "digits",
    label: str | None = "7",
    chat_id: int | None = None,
    status: str = "ok",
) -> int:
    """Store a photo and record an answer for it, the way the bot does; return the prediction id."""
    photo = await store.add_photo(image, width=8, height=8, format="png")
    return await store.record_prediction(
        user_id=user_id,
        chat_id=user_id if chat_id is None else chat_id,
        message_id=message_id,
        photo_sha256=photo.sha256,
        model=model,
        version=1 if model else None,
        label=label,
        confidence=0.9 if label else 0.2,
        probabilities=[(label or "1", 0.9), ("1", 0.1)],
        status=status,
        latency_ms=12.5,
        mode="auto",
    )


async def label_photo(
    store: Store, *, user_id: int, message_id: int, image: bytes, true_label: str, model: str = "digits"
) -> int:
    """A user sends `image`, the bot says 7, the user corrects it to `true_label` (or confirms a 7)."""
    prediction_id = await predict(store, user_id=user_id, message_id=message_id, image=image, model=model)
    verdict = "correct" if true_label == "7" else "wrong"
    await store.record_feedback(prediction_id, user_id=user_id, verdict=verdict, true_label=true_label)
    return prediction_id
