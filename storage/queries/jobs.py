"""SQL about models: retraining jobs and the model events log (promotions, rollbacks, …).

Write functions run inside their caller's transaction and never commit (see `storage.sql`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from storage.dialect import Connection
from storage.errors import JobAlreadyActive
from storage.records import (
    ACTIVE_JOB_STATUSES,
    FINISHED_JOB_STATUSES,
    JOB_RUNNERS,
    ModelEvent,
    RetrainJob,
    check_choice,
)

# ---------------------------------------------------------------- retraining jobs


_JOB_COLUMNS = """id, model, requested_by, chat_id, message_id, status, pid, stage, progress, detail,
    metrics, candidate_version, decision, reason, error, created_at, started_at, updated_at, finished_at,
    language, watcher, watched_at, runner, forced, worker, lease_until"""


def _job(row: Sequence[Any]) -> RetrainJob:
    values = list(row)
    values[9] = json.loads(values[9]) if values[9] else {}
    values[10] = json.loads(values[10]) if values[10] else {}
    values[23] = bool(values[23])  # forced: 0/1 on both backends
    return RetrainJob(*values)


def get_job(db: Connection, job_id: int) -> RetrainJob | None:
    row = db.execute(f"SELECT {_JOB_COLUMNS} FROM retrain_jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def active_job(db: Connection, model: str | None = None) -> RetrainJob | None:
    """The oldest queued or running job (of `model`, when given)."""
    row = db.execute(
        f"""SELECT {_JOB_COLUMNS} FROM retrain_jobs
            WHERE status IN (?, ?) AND (CAST(? AS TEXT) IS NULL OR model = ?) ORDER BY id LIMIT 1""",
        (*ACTIVE_JOB_STATUSES, model, model),
    ).fetchone()
    return _job(row) if row else None


def active_jobs(db: Connection) -> list[RetrainJob]:
    """Every queued or running job, oldest first (with workers, one per model may be active)."""
    rows = db.execute(
        f"SELECT {_JOB_COLUMNS} FROM retrain_jobs WHERE status IN (?, ?) ORDER BY id", ACTIVE_JOB_STATUSES
    )
    return [_job(row) for row in rows]


def recent_jobs(db: Connection, model: str | None, limit: int) -> list[RetrainJob]:
    rows = db.execute(
        f"""SELECT {_JOB_COLUMNS} FROM retrain_jobs WHERE CAST(? AS TEXT) IS NULL OR model = ?
            ORDER BY id DESC LIMIT ?""",
        (model, model, limit),
    )
    return [_job(row) for row in rows]


def create_job(
    db: Connection,
    *,
    model: str,
    requested_by: int | None,
    chat_id: int | None,
    message_id: int | None,
    now: float,
    language: str | None = None,
    watcher: str | None = None,
    runner: str = "local",
    forced: bool = False,
) -> RetrainJob:
    """Queue a job unless one is queued or running (the check and the insert share the write lock);
    `watcher` is the bot process that will show its progress (watching it from now).

    `runner` "local": the process that queues it starts it, one job at a time; "worker": a `photobot
    worker` claims it (`storage.queries.leases`), and only a job of the same model stands in its way.
    `forced`: it trains even with few new labels (the worker passes it on)."""
    check_choice("runner", runner, JOB_RUNNERS)
    running = active_job(db, model if runner == "worker" else None)
    if running is not None:
        at_a_time = "one job per model runs at a time" if runner == "worker" else "one job runs at a time"
        raise JobAlreadyActive(
            f"retrain job {running.id} ({running.model}) is {running.status}; {at_a_time}", running
        )
    job_id = db.execute(
        """INSERT INTO retrain_jobs (model, requested_by, chat_id, message_id, status, created_at, updated_at,
               language, watcher, watched_at, runner, forced)
           VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        (
            model,
            requested_by,
            chat_id,
            message_id,
            now,
            now,
            language,
            watcher,
            now if watcher else None,
            runner,
            int(forced),
        ),
    ).fetchone()[0]
    job = get_job(db, job_id)
    assert job is not None
    return job


def _require_job(db: Connection, job_id: int) -> RetrainJob:
    job = get_job(db, job_id)
    if job is None:
        raise LookupError(f"retrain job {job_id} does not exist")
    return job


def start_job(db: Connection, job_id: int, pid: int, now: float, worker: str | None = None) -> RetrainJob:
    """The job's process starts it. A job a worker claimed is already running, as `worker`'s: its
    process (the worker's child) only records its pid."""
    job = _require_job(db, job_id)
    if worker is not None:
        if job.status != "running" or job.worker != worker:
            raise ValueError(f"retrain job {job_id} is {job.status}, not running for worker {worker}")
        db.execute("UPDATE retrain_jobs SET pid = ?, updated_at = ? WHERE id = ?", (pid, now, job_id))
        return _require_job(db, job_id)
    if job.status != "queued":
        raise ValueError(f"retrain job {job_id} is {job.status}, not queued")
    db.execute(
        "UPDATE retrain_jobs SET status = 'running', pid = ?, started_at = ?, updated_at = ? WHERE id = ?",
        (pid, now, now, job_id),
    )
    return _require_job(db, job_id)


def update_job(
    db: Connection,
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
    db: Connection,
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


def set_job_message(db: Connection, job_id: int, message_id: int) -> None:
    """The message that shows the job's progress (sent after the job was queued)."""
    db.execute("UPDATE retrain_jobs SET message_id = ? WHERE id = ?", (message_id, job_id))


def watch_job(
    db: Connection,
    job_id: int,
    watcher: str,
    now: float,
    *,
    unwatched_before: float | None,
    from_watcher: str | None = None,
) -> bool:
    """`watcher` shows the job's progress from now (a heartbeat of the bot process that does). With
    `unwatched_before`, only if nobody has watched it since then, or `from_watcher` (a process that
    died) still does: a bot process taking over a job whose watcher stopped; two taking over at once,
    one wins. True when `watcher` watches it."""
    if unwatched_before is None:
        changed = db.execute(
            "UPDATE retrain_jobs SET watcher = ?, watched_at = ? WHERE id = ?", (watcher, now, job_id)
        ).rowcount
    else:
        changed = db.execute(
            """UPDATE retrain_jobs SET watcher = ?, watched_at = ?
               WHERE id = ? AND (watched_at IS NULL OR watched_at < ? OR watcher = ?)""",
            (watcher, now, job_id, unwatched_before, from_watcher),
        ).rowcount
    return changed > 0


def unreported_jobs(db: Connection, since: float) -> list[RetrainJob]:
    """Jobs a bot process started that have ended since `since` with no report sent: their progress
    message and report are still owed to the admin who asked, if the bot process that watched them let
    go of them (it stopped while they ran) or died (the caller knows which processes live)."""
    rows = db.execute(
        f"""SELECT {_JOB_COLUMNS} FROM retrain_jobs
            WHERE status NOT IN ('queued', 'running') AND runner = 'local' AND watcher IS NOT NULL
              AND reported_at IS NULL AND chat_id IS NOT NULL AND message_id IS NOT NULL
              AND finished_at >= ?
            ORDER BY id""",
        (since,),
    )
    return [_job(row) for row in rows]


def claim_report(db: Connection, job_id: int, watcher: str, now: float, *, from_watcher: str | None) -> bool:
    """Take on sending an ended job's report, as the bot process `watcher` (watching it from `now`),
    when nobody watches it or `from_watcher` (a process that died) still does: True for one process
    only, however many start at once."""
    claimed = db.execute(
        """UPDATE retrain_jobs SET watcher = ?, watched_at = ?
           WHERE id = ? AND reported_at IS NULL AND watcher IS NOT NULL
             AND (watched_at IS NULL OR watcher = ?)""",
        (watcher, now, job_id, from_watcher),
    ).rowcount
    return claimed > 0


def mark_reported(db: Connection, job_id: int, now: float) -> None:
    db.execute("UPDATE retrain_jobs SET reported_at = ? WHERE id = ?", (now, job_id))


def unwatch_jobs(db: Connection, job_ids: Iterable[int], watcher: str) -> None:
    """`watcher` lets go of the jobs (its bot stops, the jobs go on): another bot process may take over."""
    for job_id in job_ids:
        db.execute(
            "UPDATE retrain_jobs SET watched_at = NULL WHERE id = ? AND watcher = ?", (job_id, watcher)
        )


def fail_jobs(db: Connection, job_ids: Iterable[int], error: str, now: float) -> list[int]:
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
    db: Connection,
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


def model_events(db: Connection, model: str | None, action: str | None, limit: int) -> list[ModelEvent]:
    rows = db.execute(
        """SELECT id, model, action, from_version, to_version, actor, reason, job_id, created_at
           FROM model_events WHERE (CAST(? AS TEXT) IS NULL OR model = ?)
               AND (CAST(? AS TEXT) IS NULL OR action = ?)
           ORDER BY created_at DESC, id DESC LIMIT ?""",
        (model, model, action, action, limit),
    )
    return [ModelEvent(*row) for row in rows]
