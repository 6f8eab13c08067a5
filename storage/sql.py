"""The SQL itself: plain functions over a `sqlite3.Connection`, parameterised, one job each.

Write functions run inside a transaction opened by their caller (`Store`'s group commit or
`SyncStore`), so several of them commit together or not at all; they never commit themselves.
Read functions run anywhere. The async `Store` and the synchronous `SyncStore` both call these, so
the bot and a job process can never disagree about what a row means.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from storage.errors import JobAlreadyActive, NotPredictionOwner, PredictionNotFound
from storage.records import (
    ACTIVE_JOB_STATUSES,
    FINISHED_JOB_STATUSES,
    STATUSES,
    VERDICTS,
    Feedback,
    FeedbackResult,
    ForgetReport,
    GlobalStats,
    ModelEvent,
    ModelStats,
    PendingCorrection,
    Photo,
    PredictionRecord,
    RetrainJob,
    User,
    UserStats,
    check_choice,
    check_mode,
)

Probabilities = Sequence[Sequence[Any]] | Mapping[str, float]


# ---------------------------------------------------------------- users and chats


def touch_user(db: sqlite3.Connection, user_id: int, language: str | None, now: float) -> None:
    db.execute(
        """INSERT INTO users (id, language, first_seen, last_seen) VALUES (?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET
               last_seen = max(users.last_seen, excluded.last_seen),
               language = coalesce(excluded.language, users.language)""",
        (user_id, language, now, now),
    )


def get_user(db: sqlite3.Connection, user_id: int) -> User | None:
    row = db.execute(
        "SELECT id, language, first_seen, last_seen, blocked FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    return User(row[0], row[1], row[2], row[3], bool(row[4])) if row else None


def set_blocked(db: sqlite3.Connection, user_id: int, blocked: bool, now: float) -> User:
    touch_user(db, user_id, None, now)
    db.execute("UPDATE users SET blocked = ? WHERE id = ?", (int(blocked), user_id))
    user = get_user(db, user_id)
    assert user is not None
    return user


def blocked_users(db: sqlite3.Connection) -> list[int]:
    return [row[0] for row in db.execute("SELECT id FROM users WHERE blocked = 1 ORDER BY id")]


def set_chat_mode(db: sqlite3.Connection, chat_id: int, mode: str, now: float) -> None:
    check_mode(mode)
    db.execute(
        """INSERT INTO chats (id, mode, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, updated_at = excluded.updated_at""",
        (chat_id, mode, now),
    )


def chat_mode(db: sqlite3.Connection, chat_id: int) -> str:
    row = db.execute("SELECT mode FROM chats WHERE id = ?", (chat_id,)).fetchone()
    return row[0] if row else "auto"


# ---------------------------------------------------------------- photos


def insert_photo(
    db: sqlite3.Connection,
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


def get_photo(db: sqlite3.Connection, sha256: str) -> Photo | None:
    row = db.execute(
        "SELECT sha256, size, width, height, format, path FROM photos WHERE sha256 = ?", (sha256,)
    ).fetchone()
    return Photo(*row) if row else None


# ---------------------------------------------------------------- predictions


def _probabilities_json(probabilities: Probabilities) -> str:
    pairs = probabilities.items() if isinstance(probabilities, Mapping) else probabilities
    return json.dumps([[str(label), float(p)] for label, p in pairs])


def record_prediction(
    db: sqlite3.Connection,
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


def get_prediction(db: sqlite3.Connection, prediction_id: int) -> PredictionRecord | None:
    row = db.execute(
        f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE id = ?", (prediction_id,)
    ).fetchone()
    return _prediction(row) if row else None


def user_predictions(db: sqlite3.Connection, user_id: int, limit: int) -> list[PredictionRecord]:
    rows = db.execute(
        f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE user_id = ? ORDER BY id DESC LIMIT ?",
        (user_id, limit),
    )
    return [_prediction(row) for row in rows]


# ---------------------------------------------------------------- feedback and contributions


def _feedback(row: Sequence[Any]) -> Feedback:
    return Feedback(*row)


def get_feedback(db: sqlite3.Connection, prediction_id: int) -> Feedback | None:
    row = db.execute(
        """SELECT prediction_id, user_id, verdict, model, true_label, created_at
           FROM feedback WHERE prediction_id = ?""",
        (prediction_id,),
    ).fetchone()
    return _feedback(row) if row else None


def record_feedback(
    db: sqlite3.Connection,
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
    db.execute("UPDATE users SET last_seen = max(last_seen, ?) WHERE id = ?", (now, user_id))
    return FeedbackResult(Feedback(prediction_id, user_id, verdict, model, true_label, now), created=True)


def record_contribution(
    db: sqlite3.Connection,
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
) -> int:
    """A photo sent with its label in the caption; the same message recorded again keeps the first."""
    touch_user(db, user_id, language, now)
    row = db.execute(
        """INSERT INTO contributions (user_id, chat_id, message_id, photo_sha256, model, label,
               prediction_id, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (chat_id, message_id) DO NOTHING
           RETURNING id""",
        (user_id, chat_id, message_id, photo_sha256, model, label, prediction_id, now),
    ).fetchone()
    if row is not None:
        return int(row[0])
    existing = db.execute(
        "SELECT id FROM contributions WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
    ).fetchone()
    return int(existing[0])


# ---------------------------------------------------------------- statistics


# A "photo" everywhere the bot counts (/stats, admin /stats, /forget): a distinct photo a person sent,
# answered or labelled; the same photo sent twice by one person is one photo, by two people two.
_PEOPLES_PHOTOS = """SELECT user_id, photo_sha256 FROM predictions
    UNION SELECT user_id, photo_sha256 FROM contributions"""


def user_photo_count(db: sqlite3.Connection, user_id: int) -> int:
    """How many distinct photos the user sent (see `_PEOPLES_PHOTOS`)."""
    return len(user_photo_hashes(db, user_id))


def user_stats(db: sqlite3.Connection, user_id: int) -> UserStats:
    photos = user_photo_count(db, user_id)
    feedback = dict(
        db.execute(
            "SELECT verdict, count(*) FROM feedback WHERE user_id = ? GROUP BY verdict", (user_id,)
        ).fetchall()
    )
    contributions = db.execute("SELECT count(*) FROM contributions WHERE user_id = ?", (user_id,)).fetchone()[
        0
    ]
    correct, wrong = feedback.get("correct", 0), feedback.get("wrong", 0)
    return UserStats(user_id, photos, correct + wrong, correct, wrong, contributions)


def global_stats(db: sqlite3.Connection, now: float) -> GlobalStats:
    def one(sql: str, params: Sequence[Any] = ()) -> Any:
        return db.execute(sql, params).fetchone()[0]

    day_ago = now - 86_400
    by_model: dict[str, ModelStats] = {}
    for model, predictions, feedback, correct in db.execute(
        """SELECT coalesce(p.model, 'none'), count(*), count(f.prediction_id),
                  coalesce(sum(f.verdict = 'correct'), 0)
           FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.id
           GROUP BY coalesce(p.model, 'none') ORDER BY 1"""
    ):
        by_model[model] = ModelStats(predictions, feedback, correct)
    predictions = one("SELECT count(*) FROM predictions")
    timed = one("SELECT count(latency_ms) FROM predictions")
    median = None
    if timed:
        median = one(
            """SELECT latency_ms FROM predictions WHERE latency_ms IS NOT NULL
               ORDER BY latency_ms LIMIT 1 OFFSET ?""",
            (timed // 2,),
        )
    return GlobalStats(
        users=one("SELECT count(*) FROM users"),
        blocked_users=one("SELECT count(*) FROM users WHERE blocked = 1"),
        active_users_24h=one("SELECT count(*) FROM users WHERE last_seen >= ?", (day_ago,)),
        photos=one(f"SELECT count(*) FROM ({_PEOPLES_PHOTOS})"),
        predictions=predictions,
        predictions_24h=one("SELECT count(*) FROM predictions WHERE created_at >= ?", (day_ago,)),
        by_status=dict(db.execute("SELECT status, count(*) FROM predictions GROUP BY status ORDER BY 1")),
        by_model=by_model,
        feedback=one("SELECT count(*) FROM feedback"),
        contributions=one("SELECT count(*) FROM contributions"),
        median_latency_ms=median,
    )


# ---------------------------------------------------------------- forgetting a user


def user_photo_hashes(db: sqlite3.Connection, user_id: int) -> list[str]:
    """The SHA-256 of every photo the user sent (answered or labelled), shared with others or not."""
    return [
        row[0]
        for row in db.execute(
            """SELECT photo_sha256 FROM predictions WHERE user_id = ?
               UNION SELECT photo_sha256 FROM contributions WHERE user_id = ?
               ORDER BY 1""",
            (user_id, user_id),
        )
    ]


def forget_user(db: sqlite3.Connection, user_id: int, now: float) -> tuple[ForgetReport, list[str]]:
    """Delete every row about a user; return the report and the photos nobody else sent.

    Those photos' rows go too, and their files are queued in `image_deletions` in this same
    transaction, so a crash before the files are removed cannot forget to remove them. A blocked
    user keeps a bare row (id, the block, and `now` as both times): forgetting must not unblock.
    """
    photos = user_photo_hashes(db, user_id)
    feedback = db.execute(
        """DELETE FROM feedback WHERE user_id = ?
              OR prediction_id IN (SELECT id FROM predictions WHERE user_id = ?)""",
        (user_id, user_id),
    ).rowcount
    contributions = db.execute("DELETE FROM contributions WHERE user_id = ?", (user_id,)).rowcount
    predictions = db.execute("DELETE FROM predictions WHERE user_id = ?", (user_id,)).rowcount
    db.execute("DELETE FROM chats WHERE id = ?", (user_id,))
    db.execute("DELETE FROM pending_corrections WHERE user_id = ?", (user_id,))
    kept_block = _forget_user_row(db, user_id, now)
    orphans = []
    for sha256 in photos:
        still_used = db.execute(
            """SELECT EXISTS (SELECT 1 FROM predictions WHERE photo_sha256 = ?)
                   OR EXISTS (SELECT 1 FROM contributions WHERE photo_sha256 = ?)""",
            (sha256, sha256),
        ).fetchone()[0]
        if still_used:
            continue
        path = db.execute("DELETE FROM photos WHERE sha256 = ? RETURNING path", (sha256,)).fetchone()
        if path is not None:
            db.execute(
                "INSERT OR REPLACE INTO image_deletions (sha256, path) VALUES (?, ?)", (sha256, path[0])
            )
            orphans.append(sha256)
    report = ForgetReport(
        user_id, predictions, feedback, contributions, len(photos), kept_block, files=len(orphans)
    )
    return report, orphans


def _forget_user_row(db: sqlite3.Connection, user_id: int, now: float) -> bool:
    """Delete the user's row, or strip a blocked user's to the block alone; True if a block was kept."""
    kept = db.execute(
        """UPDATE users SET language = NULL, first_seen = ?, last_seen = ?
           WHERE id = ? AND blocked = 1""",
        (now, now, user_id),
    ).rowcount
    if not kept:
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))
    return bool(kept)


def pending_image_deletions(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT sha256 FROM image_deletions ORDER BY sha256")]


def claim_image_deletion(db: sqlite3.Connection, sha256: str) -> bool:
    """Drop a queued deletion; True if the file may be removed now (no photo row needs it again).

    Call it, and remove the file, while holding the write lock: a concurrent `insert_photo` of the
    same bytes then either comes before (and keeps the file) or after (and finds it missing).
    """
    db.execute("DELETE FROM image_deletions WHERE sha256 = ?", (sha256,))
    return db.execute("SELECT 1 FROM photos WHERE sha256 = ?", (sha256,)).fetchone() is None


# ---------------------------------------------------------------- number corrections


def ask_for_number(
    db: sqlite3.Connection,
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


def pending_correction(db: sqlite3.Connection, user_id: int) -> PendingCorrection | None:
    row = db.execute(
        """SELECT user_id, prediction_id, chat_id, answer_message_id, question_message_id, created_at
           FROM pending_corrections WHERE user_id = ?""",
        (user_id,),
    ).fetchone()
    return PendingCorrection(*row) if row else None


def drop_pending_correction(db: sqlite3.Connection, user_id: int, prediction_id: int | None) -> bool:
    """Stop waiting (for that prediction only, when given); True if a question was open."""
    return bool(
        db.execute(
            "DELETE FROM pending_corrections WHERE user_id = ? AND (? IS NULL OR prediction_id = ?)",
            (user_id, prediction_id, prediction_id),
        ).rowcount
    )


# ---------------------------------------------------------------- retraining jobs


_JOB_COLUMNS = """id, model, requested_by, chat_id, message_id, status, pid, stage, progress, detail,
    metrics, candidate_version, decision, reason, error, created_at, started_at, updated_at, finished_at"""


def _job(row: Sequence[Any]) -> RetrainJob:
    values = list(row)
    values[9] = json.loads(values[9]) if values[9] else {}
    values[10] = json.loads(values[10]) if values[10] else {}
    return RetrainJob(*values)


def get_job(db: sqlite3.Connection, job_id: int) -> RetrainJob | None:
    row = db.execute(f"SELECT {_JOB_COLUMNS} FROM retrain_jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def active_job(db: sqlite3.Connection) -> RetrainJob | None:
    row = db.execute(
        f"""SELECT {_JOB_COLUMNS} FROM retrain_jobs WHERE status IN (?, ?) ORDER BY id LIMIT 1""",
        ACTIVE_JOB_STATUSES,
    ).fetchone()
    return _job(row) if row else None


def recent_jobs(db: sqlite3.Connection, model: str | None, limit: int) -> list[RetrainJob]:
    rows = db.execute(
        f"""SELECT {_JOB_COLUMNS} FROM retrain_jobs WHERE ? IS NULL OR model = ?
            ORDER BY id DESC LIMIT ?""",
        (model, model, limit),
    )
    return [_job(row) for row in rows]


def create_job(
    db: sqlite3.Connection,
    *,
    model: str,
    requested_by: int | None,
    chat_id: int | None,
    message_id: int | None,
    now: float,
) -> RetrainJob:
    """Queue a job unless one is queued or running (the check and the insert share the write lock)."""
    running = active_job(db)
    if running is not None:
        raise JobAlreadyActive(
            f"retrain job {running.id} ({running.model}) is {running.status}; one job runs at a time", running
        )
    job_id = db.execute(
        """INSERT INTO retrain_jobs (model, requested_by, chat_id, message_id, status, created_at, updated_at)
           VALUES (?, ?, ?, ?, 'queued', ?, ?) RETURNING id""",
        (model, requested_by, chat_id, message_id, now, now),
    ).fetchone()[0]
    job = get_job(db, job_id)
    assert job is not None
    return job


def _require_job(db: sqlite3.Connection, job_id: int) -> RetrainJob:
    job = get_job(db, job_id)
    if job is None:
        raise LookupError(f"retrain job {job_id} does not exist")
    return job


def start_job(db: sqlite3.Connection, job_id: int, pid: int, now: float) -> RetrainJob:
    job = _require_job(db, job_id)
    if job.status != "queued":
        raise ValueError(f"retrain job {job_id} is {job.status}, not queued")
    db.execute(
        "UPDATE retrain_jobs SET status = 'running', pid = ?, started_at = ?, updated_at = ? WHERE id = ?",
        (pid, now, now, job_id),
    )
    return _require_job(db, job_id)


def update_job(
    db: sqlite3.Connection,
    job_id: int,
    *,
    stage: str | None,
    progress: float | None,
    detail: Mapping[str, Any] | None,
    now: float,
) -> RetrainJob:
    _require_job(db, job_id)
    db.execute(
        """UPDATE retrain_jobs SET stage = coalesce(?, stage), progress = coalesce(?, progress),
               detail = coalesce(?, detail), updated_at = ? WHERE id = ?""",
        (stage, progress, json.dumps(detail) if detail is not None else None, now, job_id),
    )
    return _require_job(db, job_id)


def finish_job(
    db: sqlite3.Connection,
    job_id: int,
    *,
    status: str,
    metrics: Mapping[str, Any] | None,
    candidate_version: int | None,
    decision: str | None,
    reason: str | None,
    error: str | None,
    now: float,
) -> RetrainJob:
    check_choice("status", status, FINISHED_JOB_STATUSES)
    job = _require_job(db, job_id)
    if job.status in FINISHED_JOB_STATUSES:
        raise ValueError(f"retrain job {job_id} already finished as {job.status}")
    db.execute(
        """UPDATE retrain_jobs SET status = ?, metrics = coalesce(?, metrics),
               candidate_version = coalesce(?, candidate_version), decision = ?, reason = ?, error = ?,
               updated_at = ?, finished_at = ? WHERE id = ?""",
        (
            status,
            json.dumps(metrics) if metrics is not None else None,
            candidate_version,
            decision,
            reason,
            error,
            now,
            now,
            job_id,
        ),
    )
    return _require_job(db, job_id)


def fail_jobs(db: sqlite3.Connection, job_ids: Iterable[int], error: str, now: float) -> list[int]:
    failed = []
    for job_id in job_ids:
        changed = db.execute(
            """UPDATE retrain_jobs SET status = 'failed', error = ?, updated_at = ?, finished_at = ?
               WHERE id = ? AND status IN ('queued', 'running')""",
            (error, now, now, job_id),
        ).rowcount
        if changed:
            failed.append(job_id)
    return failed


# ---------------------------------------------------------------- model events


def record_model_event(
    db: sqlite3.Connection,
    *,
    model: str,
    action: str,
    from_version: int | None,
    to_version: int | None,
    actor: int | None,
    reason: str | None,
    job_id: int | None,
    now: float,
) -> int:
    return int(
        db.execute(
            """INSERT INTO model_events (model, action, from_version, to_version, actor, reason, job_id,
                   created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            (model, action, from_version, to_version, actor, reason, job_id, now),
        ).fetchone()[0]
    )


def model_events(
    db: sqlite3.Connection, model: str | None, action: str | None, limit: int
) -> list[ModelEvent]:
    rows = db.execute(
        """SELECT id, model, action, from_version, to_version, actor, reason, job_id, created_at
           FROM model_events WHERE (? IS NULL OR model = ?) AND (? IS NULL OR action = ?)
           ORDER BY created_at DESC, id DESC LIMIT ?""",
        (model, model, action, action, limit),
    )
    return [ModelEvent(*row) for row in rows]
