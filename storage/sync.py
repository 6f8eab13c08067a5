"""`SyncStore`: the same database from a plain, synchronous process — a retraining job, a CLI command.

`database` is a SQLite file or a `postgresql://` URL, as for `Store`.

A job reports progress from inside a Keras callback, where there is no event loop; this gives it the
job, model-event and labelled-set operations with the same SQL as `Store`. Each write is its own
short `BEGIN IMMEDIATE … COMMIT`, so it interleaves safely with the bot's writes (busy timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from storage import added_labels as label_sql
from storage import sql, taught
from storage.added_labels import AddedLabel
from storage.connect import DEFAULT_BUSY_TIMEOUT_S, open_database
from storage.dialect import Connection, Database, is_postgres_url
from storage.labelled import DEFAULT_VALIDATION_PERCENT, LabelledSet, load_labelled_set
from storage.records import ModelEvent, RetrainJob

T = TypeVar("T")


class SyncStore:
    def __init__(
        self,
        database: Database,
        images_dir: Path | str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.database = database if is_postgres_url(database) else Path(database)
        self.images_root = Path(images_dir)
        self._db = open_database(self.database, busy_timeout_s=busy_timeout_s)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def labelled_set(
        self, model: str, *, validation_percent: int = DEFAULT_VALIDATION_PERCENT
    ) -> LabelledSet:
        return load_labelled_set(self._db, self.images_root, model, validation_percent)

    def taught_models(self) -> list[taught.TaughtModel]:
        return taught.taught_models(self._db)

    def create_taught_model(
        self, name: str, labels: list[taught.TaughtLabel], created_by: int | None = None
    ) -> taught.TaughtModel:
        return self._write(lambda db: taught.create_taught_model(db, name, labels, created_by, time.time()))

    def set_taught_labels(self, name: str, labels: list[taught.TaughtLabel]) -> taught.TaughtModel:
        return self._write(lambda db: taught.set_taught_labels(db, name, labels))

    def added_labels(self, model: str | None = None) -> list[AddedLabel]:
        return label_sql.added_labels(self._db, model)

    def add_model_label(self, model: str, label: str, added_by: int | None = None) -> AddedLabel:
        return self._write(lambda db: label_sql.add_label(db, model, label, added_by, time.time()))

    def blocked_users(self) -> list[int]:
        return sql.blocked_users(self._db)

    def create_retrain_job(
        self,
        model: str,
        *,
        requested_by: int | None = None,
        chat_id: int | None = None,
        message_id: int | None = None,
    ) -> RetrainJob:
        """Queue a job; raises `JobAlreadyActive` (with `.job`) if one is queued or running."""
        return self._write(
            lambda db: sql.create_job(
                db,
                model=model,
                requested_by=requested_by,
                chat_id=chat_id,
                message_id=message_id,
                now=time.time(),
            )
        )

    def start_retrain_job(self, job_id: int, pid: int, worker: str | None = None) -> RetrainJob:
        """`worker`: the job a worker claimed (already running), started by its child process."""
        return self._write(lambda db: sql.start_job(db, job_id, pid, time.time(), worker))

    def update_retrain_job(
        self,
        job_id: int,
        *,
        stage: str | None = None,
        progress: float | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> RetrainJob:
        return self._write(
            lambda db: sql.update_job(
                db, job_id, stage=stage, progress=progress, detail=detail, now=time.time()
            )
        )

    def finish_retrain_job(
        self,
        job_id: int,
        *,
        status: str,
        metrics: Mapping[str, Any] | None = None,
        candidate_version: int | None = None,
        decision: str | None = None,
        reason: str | None = None,
        error: str | None = None,
    ) -> RetrainJob:
        """`status` is "succeeded", "rejected" or "failed"."""
        return self._write(
            lambda db: sql.finish_job(
                db,
                job_id,
                status=status,
                metrics=metrics,
                candidate_version=candidate_version,
                decision=decision,
                reason=reason,
                error=error,
                now=time.time(),
            )
        )

    def fail_retrain_job(self, job_id: int, error: str) -> bool:
        return bool(self._write(lambda db: sql.fail_jobs(db, [job_id], error, time.time())))

    def get_retrain_job(self, job_id: int) -> RetrainJob | None:
        return sql.get_job(self._db, job_id)

    def active_retrain_job(self) -> RetrainJob | None:
        return sql.active_job(self._db)

    def recent_retrain_jobs(self, model: str | None = None, limit: int = 10) -> list[RetrainJob]:
        return sql.recent_jobs(self._db, model, limit)

    def record_model_event(
        self,
        model: str,
        action: str,
        *,
        from_version: int | None,
        to_version: int | None,
        actor: int | None = None,
        reason: str | None = None,
        job_id: int | None = None,
    ) -> int:
        return self._write(
            lambda db: sql.record_model_event(
                db,
                model=model,
                action=action,
                from_version=from_version,
                to_version=to_version,
                actor=actor,
                reason=reason,
                job_id=job_id,
                now=time.time(),
            )
        )

    def model_events(
        self, model: str | None = None, *, action: str | None = None, limit: int = 20
    ) -> list[ModelEvent]:
        return sql.model_events(self._db, model, action, limit)

    def _write(self, function: Callable[[Connection], T]) -> T:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = function(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result
