"""SQL about what people send: photos, the bot's predictions, feedback on them, labelled photos
(contributions), and the number corrections the bot is waiting for.

Write functions run inside their caller's transaction and never commit (see `storage.sql`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from storage.dialect import Connection
from storage.errors import NotPredictionOwner, PredictionNotFound
from storage.queries.people import touch_user
from storage.records import (
    STATUSES,
    VERDICTS,
    Feedback,
    FeedbackResult,
    PendingCorrection,
    Photo,
    PredictionRecord,
    check_choice,
    check_mode,
)

Probabilities = Sequence[Sequence[Any]] | Mapping[str, float]


# ---------------------------------------------------------------- photos


def insert_photo(
    db: Connection,
    sha256: str,
    size: int,
    path: str,
    width: int | None,
    height: int | None,
    image_format: str | None,
    now: float,
) -> None:
    db.execute(
        """INSERT INTO photos (sha256, size, width, height, format, path, first_seen)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (sha256) DO UPDATE SET
               width = coalesce(photos.width, excluded.width),
               height = coalesce(photos.height, excluded.height),
               format = coalesce(photos.format, excluded.format)""",
        (sha256, size, width, height, image_format, path, now),
    )
    # A photo being stored again must not be deleted by a /forget that has not finished yet.
    db.execute("DELETE FROM image_deletions WHERE sha256 = ?", (sha256,))


def get_photo(db: Connection, sha256: str) -> Photo | None:
    row = db.execute(
        "SELECT sha256, size, width, height, format, path FROM photos WHERE sha256 = ?", (sha256,)
    ).fetchone()
    return Photo(*row) if row else None


# ---------------------------------------------------------------- predictions


def _probabilities_json(probabilities: Probabilities) -> str:
    pairs = probabilities.items() if isinstance(probabilities, Mapping) else probabilities
    return json.dumps([[str(label), float(p)] for label, p in pairs])


def record_prediction(
    db: Connection,
    *,
    user_id: int,
    chat_id: int,
    message_id: int | None,
    photo_sha256: str,
    model: str | None,
    version: int | None,
    label: str | None,
    confidence: float,
    probabilities: Probabilities,
    status: str,
    latency_ms: float | None,
    mode: str | None,
    reason: str | None,
    language: str | None,
    now: float,
) -> int:
    """Insert one answer; the same (chat, message) recorded again returns the first row's id."""
    check_choice("status", status, STATUSES)
    if mode is not None:
        check_mode(mode)
    touch_user(db, user_id, language, now)
    row = db.execute(
        """INSERT INTO predictions (user_id, chat_id, message_id, photo_sha256, mode, model, version,
               label, confidence, probabilities, status, reason, latency_ms, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (chat_id, message_id) DO NOTHING
           RETURNING id""",
        (
            user_id,
            chat_id,
            message_id,
            photo_sha256,
            mode,
            model,
            version,
            label,
            float(confidence),
            _probabilities_json(probabilities),
            status,
            reason,
            latency_ms,
            now,
        ),
    ).fetchone()
    if row is not None:
        return int(row[0])
    existing = db.execute(
        "SELECT id FROM predictions WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
    ).fetchone()
    return int(existing[0])


_PREDICTION_COLUMNS = """id, user_id, chat_id, message_id, photo_sha256, mode, model, version, label,
    confidence, probabilities, status, reason, latency_ms, created_at"""


def _prediction(row: Sequence[Any]) -> PredictionRecord:
    values = list(row)
    values[10] = [(str(label), float(p)) for label, p in json.loads(values[10])]
    return PredictionRecord(*values)


def get_prediction(db: Connection, prediction_id: int) -> PredictionRecord | None:
    row = db.execute(
        f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE id = ?", (prediction_id,)
    ).fetchone()
    return _prediction(row) if row else None


def user_predictions(db: Connection, user_id: int, limit: int) -> list[PredictionRecord]:
    rows = db.execute(
        f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE user_id = ? ORDER BY id DESC LIMIT ?",
        (user_id, limit),
    )
    return [_prediction(row) for row in rows]


# ---------------------------------------------------------------- feedback and contributions


def _feedback(row: Sequence[Any]) -> Feedback:
    return Feedback(*row)


def get_feedback(db: Connection, prediction_id: int) -> Feedback | None:
    row = db.execute(
        """SELECT prediction_id, user_id, verdict, model, true_label, created_at
           FROM feedback WHERE prediction_id = ?""",
        (prediction_id,),
    ).fetchone()
    return _feedback(row) if row else None


def record_feedback(
    db: Connection,
    *,
    prediction_id: int,
    user_id: int,
    verdict: str,
    true_label: str | None,
    model: str | None,
    now: float,
) -> FeedbackResult:
    """Store the sender's answer for a prediction, once; later taps get the answer that stands."""
    check_choice("verdict", verdict, VERDICTS)
    owner = db.execute(
        "SELECT user_id, model, label FROM predictions WHERE id = ?", (prediction_id,)
    ).fetchone()
    if owner is None:
        raise PredictionNotFound(f"prediction {prediction_id} does not exist (deleted or never made)")
    owner_id, predicted_model, predicted_label = owner
    if owner_id != user_id:
        raise NotPredictionOwner(f"user {user_id} did not send the photo of prediction {prediction_id}")
    existing = get_feedback(db, prediction_id)
    if existing is not None:
        return FeedbackResult(existing, created=False)
    if verdict == "correct":
        true_label = predicted_label if true_label is None else true_label
    model = predicted_model if model is None else model
    if true_label is None or model is None:
        raise ValueError(
            f"prediction {prediction_id} had no {'label' if true_label is None else 'model'}: "
            "say which true label and model the feedback is for"
        )
    db.execute(
        """INSERT INTO feedback (prediction_id, user_id, verdict, model, true_label, created_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (prediction_id, user_id, verdict, model, true_label, now),
    )
    db.execute("UPDATE users SET last_seen = ? WHERE id = ? AND last_seen < ?", (now, user_id, now))
    return FeedbackResult(Feedback(prediction_id, user_id, verdict, model, true_label, now), created=True)


_REPLACED = """DO UPDATE SET photo_sha256 = excluded.photo_sha256, model = excluded.model,
    label = excluded.label, prediction_id = excluded.prediction_id, created_at = excluded.created_at"""


def record_contribution(
    db: Connection,
    *,
    user_id: int,
    chat_id: int,
    message_id: int | None,
    photo_sha256: str,
    model: str,
    label: str,
    prediction_id: int | None,
    language: str | None,
    now: float,
    edited: bool = False,
) -> int:
    """A photo sent with its label in the caption. The same message recorded again (an update delivered
    twice) keeps the first; an `edited` message (a new caption, a new photo) replaces it."""
    touch_user(db, user_id, language, now)
    row = db.execute(
        f"""INSERT INTO contributions (user_id, chat_id, message_id, photo_sha256, model, label,
               prediction_id, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (chat_id, message_id) {_REPLACED if edited else "DO NOTHING"}
           RETURNING id""",
        (user_id, chat_id, message_id, photo_sha256, model, label, prediction_id, now),
    ).fetchone()
    if row is not None:
        return int(row[0])
    existing = db.execute(
        "SELECT id FROM contributions WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
    ).fetchone()
    return int(existing[0])


# ---------------------------------------------------------------- number corrections


def ask_for_number(
    db: Connection,
    *,
    user_id: int,
    prediction_id: int,
    chat_id: int,
    answer_message_id: int | None,
    question_message_id: int | None,
    now: float,
) -> PendingCorrection:
    """Wait for `user_id` to type the right number for a prediction; replaces their earlier question."""
    db.execute(
        """INSERT INTO pending_corrections
               (user_id, prediction_id, chat_id, answer_message_id, question_message_id, created_at)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (user_id) DO UPDATE SET prediction_id = excluded.prediction_id,
               chat_id = excluded.chat_id, answer_message_id = excluded.answer_message_id,
               question_message_id = excluded.question_message_id, created_at = excluded.created_at""",
        (user_id, prediction_id, chat_id, answer_message_id, question_message_id, now),
    )
    return PendingCorrection(user_id, prediction_id, chat_id, answer_message_id, question_message_id, now)


def pending_correction(db: Connection, user_id: int) -> PendingCorrection | None:
    row = db.execute(
        """SELECT user_id, prediction_id, chat_id, answer_message_id, question_message_id, created_at
           FROM pending_corrections WHERE user_id = ?""",
        (user_id,),
    ).fetchone()
    return PendingCorrection(*row) if row else None


def drop_pending_correction(db: Connection, user_id: int, prediction_id: int | None) -> bool:
    """Stop waiting (for that prediction only, when given); True if a question was open."""
    return bool(
        db.execute(
            """DELETE FROM pending_corrections
               WHERE user_id = ? AND (CAST(? AS BIGINT) IS NULL OR prediction_id = ?)""",
            (user_id, prediction_id, prediction_id),
        ).rowcount
    )


def withdraw_contribution(db: Connection, *, chat_id: int, message_id: int) -> int:
    """The label of a message whose caption was edited to name none: taken back (0 or 1 rows)."""
    return int(
        db.execute(
            "DELETE FROM contributions WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
        ).rowcount
    )
