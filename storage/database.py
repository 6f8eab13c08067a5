"""`Store`: the bot's typed async API over one SQLite file (aiosqlite) and the image store.

Every write is durable when its `await` returns. To make that cheap, writes go through group commit:
callers queue small SQL functions (`storage.sql`), one writer task takes whatever is queued (up to
`max_batch`), runs the lot on the writer connection's thread inside one `BEGIN IMMEDIATE … COMMIT`,
each in its own savepoint, and resolves every caller's future after the COMMIT. One caller's error
(a forged button, a constraint) rolls back only its savepoint; the others still commit. With 50
concurrent tasks this is one fsync per ~50 writes instead of one per write.

Reads run on a second connection, so they never wait behind a batch of writes (WAL lets one writer
and many readers work at once, in this process and in others).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage import sql, taught
from storage.connect import DEFAULT_BUSY_TIMEOUT_S, open_database
from storage.errors import StorageError
from storage.images import ImageStore, StoredImage
from storage.labelled import DEFAULT_VALIDATION_PERCENT, LabelledSet, load_labelled_set
from storage.records import (
    Answer,
    Feedback,
    FeedbackResult,
    ForgetReport,
    GlobalStats,
    ModelEvent,
    PendingCorrection,
    Photo,
    PredictionRecord,
    RetrainJob,
    User,
    UserStats,
)
from storage.schema import schema_version

log = logging.getLogger(__name__)

T = TypeVar("T")
SqlFunction = Callable[[sqlite3.Connection], T]


@dataclass(frozen=True)
class RecordedPrediction:
    prediction_id: int
    photo: Photo


@dataclass
class _Write:
    function: SqlFunction[Any]
    future: asyncio.Future[Any] = field(repr=False)


class Store:
    """Open with `await Store.open(database_path, images_dir)`; close with `await store.close()`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        writer_db: sqlite3.Connection,
        reader: aiosqlite.Connection,
        reader_db: sqlite3.Connection,
        images: ImageStore,
        max_batch: int,
        image_threads: int,
    ) -> None:
        self.path = path
        self.images = images
        # Writing an image is mostly waiting for fsync; many in flight let the filesystem batch them.
        self._image_writers = ThreadPoolExecutor(image_threads, thread_name_prefix="storage-images")
        self._writer, self._writer_db = writer, writer_db
        self._reader, self._reader_db = reader, reader_db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()  # None: stop after what is queued
        self._write_task = asyncio.create_task(self._write_loop(), name="storage-writer")
        self._closed = False
        self.schema_version = 0
        self.batches = 0  # group commits so far, for the benchmark
        self.writes = 0

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        database: Path | str,
        images_dir: Path | str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_batch: int = 256,
        image_threads: int = 16,
        orphan_min_age_s: float = 3600.0,
    ) -> Store:
        """Open (creating or migrating) the database, clean up after a crash, start the writer.

        Clean-up: temporary image files of dead writers, image deletions an interrupted /forget had
        queued, and image files no row refers to that are older than `orphan_min_age_s` (a crash
        between writing a photo and committing its row; younger ones may be another process's
        write in flight).
        """
        path = Path(database)
        images = await asyncio.to_thread(ImageStore(images_dir).open)
        try:
            writer, writer_db = await _connect(lambda: open_database(path, busy_timeout_s=busy_timeout_s))
        except BaseException:
            images.close()
            raise
        try:
            reader, reader_db = await _connect(
                lambda: open_database(path, busy_timeout_s=busy_timeout_s, read_only=True)
            )
        except BaseException:
            await writer.close()
            images.close()
            raise
        store = cls(path, writer, writer_db, reader, reader_db, images, max_batch, image_threads)
        store.schema_version = await store._read(schema_version)
        await store._finish_pending_image_deletions()
        await store._remove_unreferenced_images(orphan_min_age_s)
        log.info("storage open: %s (schema %d), images in %s", path, store.schema_version, images.root)
        return store

    async def close(self) -> None:
        """Commit what is queued, then close both connections and release the image store."""
        if self._closed:
            return
        self._closed = True
        await self._queue.put(None)
        await self._write_task
        await self._writer.close()
        await self._reader.close()
        self._image_writers.shutdown(wait=True)
        self.images.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ users and chats

    async def touch_user(self, user_id: int, *, language: str | None = None) -> User:
        """Note that a user was seen (creating them); `language` is Telegram's language_code."""

        def touch(db: sqlite3.Connection) -> User:
            sql.touch_user(db, user_id, language, time.time())
            user = sql.get_user(db, user_id)
            assert user is not None
            return user

        return await self._write(touch)

    async def get_user(self, user_id: int) -> User | None:
        return await self._read(functools.partial(sql.get_user, user_id=user_id))

    async def set_blocked(self, user_id: int, blocked: bool) -> User:
        """Block (or unblock) a user's labels from training; they may still use the bot."""
        return await self._write(
            functools.partial(sql.set_blocked, user_id=user_id, blocked=blocked, now=time.time())
        )

    async def is_blocked(self, user_id: int) -> bool:
        user = await self.get_user(user_id)
        return user is not None and user.blocked

    async def blocked_users(self) -> list[int]:
        return await self._read(sql.blocked_users)

    async def set_chat_mode(self, chat_id: int, mode: str) -> None:
        """`mode` is "auto" or a catalogue model's mode ("digit", "flower", …); see `check_mode`."""
        await self._write(functools.partial(sql.set_chat_mode, chat_id=chat_id, mode=mode, now=time.time()))

    async def chat_mode(self, chat_id: int) -> str:
        return await self._read(functools.partial(sql.chat_mode, chat_id=chat_id))

    # ------------------------------------------------------------ taught models (storage.taught)

    async def taught_models(self, *, deleted: bool = False) -> list[taught.TaughtModel]:
        """The live taught models (with `deleted`, the deleted ones too: their names stay taken)."""
        return await self._read(functools.partial(taught.taught_models, deleted=deleted))

    async def create_taught_model(
        self, name: str, labels: Sequence[taught.TaughtLabel], created_by: int | None
    ) -> taught.TaughtModel:
        """Raises TaughtModelExists when the name was ever used by a taught model."""
        return await self._write(
            functools.partial(
                taught.create_taught_model, name=name, labels=labels, created_by=created_by, now=time.time()
            )
        )

    async def set_taught_labels(self, name: str, labels: Sequence[taught.TaughtLabel]) -> taught.TaughtModel:
        return await self._write(functools.partial(taught.set_taught_labels, name=name, labels=labels))

    async def delete_taught_model(self, name: str) -> bool:
        return await self._write(functools.partial(taught.delete_taught_model, name=name, now=time.time()))

    # ------------------------------------------------------------ photos

    async def add_photo(
        self,
        data: bytes,
        *,
        width: int | None = None,
        height: int | None = None,
        format: str | None = None,
    ) -> Photo:
        """Store a photo's bytes (once per content) and its row; durable when this returns.

        The file is fsynced before the row commits, so a row never points at a missing file.
        """
        photo, _ = await self._store_photo_then(data, width, height, format, lambda db, photo: None)
        return photo

    async def save_image(self, data: bytes) -> StoredImage:
        """Write a photo's file durably, ahead of its row: the bot does it while the models look at the
        photo, then passes it to `record_photo_prediction(image=…)`.

        A file that gets no row must go through `discard_image`; one left by a crash in between is
        removed by a later `open` (files no row refers to, once `orphan_min_age_s` old).
        """
        if self._closed:
            raise StorageError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._image_writers, self.images.put, data)

    async def discard_image(self, image: StoredImage) -> None:
        """Remove a file `save_image` wrote for a photo that got no row, unless a row now needs it."""
        if image.created:
            await self._remove_images([image.sha256])

    async def record_photo_prediction(
        self,
        data: bytes,
        *,
        prediction: Answer,
        user_id: int,
        chat_id: int,
        message_id: int | None,
        width: int | None = None,
        height: int | None = None,
        format: str | None = None,
        latency_ms: float | None = None,
        mode: str | None = None,
        language: str | None = None,
        image: StoredImage | None = None,
    ) -> RecordedPrediction:
        """What the bot does for each photo: `add_photo` and `record_prediction` in one transaction.

        `prediction` is the engine's answer (any object with model, version, label, confidence,
        status, top and reason: inference's `Prediction`); `top` is stored as the probabilities.
        `image` is the file `save_image` already wrote for `data`, if it did.
        """

        def record(db: sqlite3.Connection, photo: Photo) -> int:
            return sql.record_prediction(
                db,
                user_id=user_id,
                chat_id=chat_id,
                message_id=message_id,
                photo_sha256=photo.sha256,
                model=prediction.model,
                version=prediction.version,
                label=prediction.label,
                confidence=prediction.confidence,
                probabilities=prediction.top,
                status=prediction.status,
                latency_ms=latency_ms,
                mode=mode,
                reason=prediction.reason,
                language=language,
                now=time.time(),
            )

        photo, prediction_id = await self._store_photo_then(data, width, height, format, record, image)
        return RecordedPrediction(prediction_id, photo)

    async def _store_photo_then(
        self,
        data: bytes,
        width: int | None,
        height: int | None,
        image_format: str | None,
        then: Callable[[sqlite3.Connection, Photo], T],
        saved: StoredImage | None = None,
    ) -> tuple[Photo, T]:
        """Write the file (in a thread) unless it is `saved`, then insert its row and run `then` in one
        transaction."""
        for _ in range(3):
            stored = saved or await self.save_image(data)
            saved = None  # if the file disappears before the row commits, write it again
            photo = Photo(stored.sha256, stored.size, width, height, image_format, stored.path)

            def insert(db: sqlite3.Connection, photo: Photo = photo) -> tuple[bool, T | None]:
                # Checked under the write lock: a concurrent /forget of the same bytes removes files
                # only while holding it, so either the file is here now or we write it again.
                if not self.images.exists(photo.sha256):
                    return False, None
                sql.insert_photo(
                    db, photo.sha256, photo.size, photo.path, width, height, image_format, time.time()
                )
                return True, then(db, photo)

            inserted, result = await self._write(insert)
            if inserted:
                return photo, result  # type: ignore[return-value]
        raise StorageError(f"photo {stored.sha256} kept disappearing while being stored")

    async def get_photo(self, sha256: str) -> Photo | None:
        return await self._read(functools.partial(sql.get_photo, sha256=sha256))

    # ------------------------------------------------------------ predictions, feedback, captions

    async def record_prediction(
        self,
        *,
        user_id: int,
        chat_id: int,
        message_id: int | None,
        photo_sha256: str,
        model: str | None,
        version: int | None,
        label: str | None,
        confidence: float,
        probabilities: sql.Probabilities,
        status: str,
        latency_ms: float | None = None,
        mode: str | None = None,
        reason: str | None = None,
        language: str | None = None,
    ) -> int:
        """Record an answer for a photo stored with `add_photo`; return the prediction id.

        Idempotent per (chat_id, message_id): a redelivered update returns the first id.
        `probabilities` is [(label, p), …] best first (or a {label: p} mapping); `status` is "ok",
        "unsure" or "not_recognized"; the user is created or touched in the same transaction.
        """
        return await self._write(
            functools.partial(
                sql.record_prediction,
                user_id=user_id,
                chat_id=chat_id,
                message_id=message_id,
                photo_sha256=photo_sha256,
                model=model,
                version=version,
                label=label,
                confidence=confidence,
                probabilities=probabilities,
                status=status,
                latency_ms=latency_ms,
                mode=mode,
                reason=reason,
                language=language,
                now=time.time(),
            )
        )

    async def get_prediction(self, prediction_id: int) -> PredictionRecord | None:
        return await self._read(functools.partial(sql.get_prediction, prediction_id=prediction_id))

    async def user_predictions(self, user_id: int, limit: int = 20) -> list[PredictionRecord]:
        return await self._read(functools.partial(sql.user_predictions, user_id=user_id, limit=limit))

    async def record_feedback(
        self,
        prediction_id: int,
        *,
        user_id: int,
        verdict: str,
        true_label: str | None = None,
        model: str | None = None,
    ) -> FeedbackResult:
        """Record the sender's verdict ("correct" / "wrong") on a prediction, at most once.

        `true_label` defaults to the predicted label for "correct"; for "wrong" it is the label the
        user picked, or `NOT_A_DIGIT` / `NOT_A_FLOWER`. `model` says whose label it is (default: the
        model that answered; give it when the photo was not recognised). A repeated tap returns the
        feedback that stands with `created=False`. Raises `PredictionNotFound` (stale button, e.g.
        after /forget) and `NotPredictionOwner` (someone else's photo).
        """
        return await self._write(
            functools.partial(
                sql.record_feedback,
                prediction_id=prediction_id,
                user_id=user_id,
                verdict=verdict,
                true_label=true_label,
                model=model,
                now=time.time(),
            )
        )

    async def get_feedback(self, prediction_id: int) -> Feedback | None:
        return await self._read(functools.partial(sql.get_feedback, prediction_id=prediction_id))

    async def record_contribution(
        self,
        *,
        user_id: int,
        chat_id: int,
        message_id: int | None,
        photo_sha256: str,
        model: str,
        label: str,
        prediction_id: int | None = None,
        language: str | None = None,
    ) -> int:
        """A stored photo sent with its label as the caption: a labelled example without feedback."""
        return await self._write(
            functools.partial(
                sql.record_contribution,
                user_id=user_id,
                chat_id=chat_id,
                message_id=message_id,
                photo_sha256=photo_sha256,
                model=model,
                label=label,
                prediction_id=prediction_id,
                language=language,
                now=time.time(),
            )
        )

    # ------------------------------------------------------------ number corrections

    async def ask_for_number(
        self,
        user_id: int,
        prediction_id: int,
        *,
        chat_id: int,
        answer_message_id: int | None,
        question_message_id: int | None,
    ) -> PendingCorrection:
        """Remember that the bot asked `user_id` to type the right number for a prediction (one open
        question per person; a later ❌ replaces it). Kept in the database, so a restart keeps it."""
        return await self._write(
            functools.partial(
                sql.ask_for_number,
                user_id=user_id,
                prediction_id=prediction_id,
                chat_id=chat_id,
                answer_message_id=answer_message_id,
                question_message_id=question_message_id,
                now=time.time(),
            )
        )

    async def pending_correction(self, user_id: int) -> PendingCorrection | None:
        return await self._read(functools.partial(sql.pending_correction, user_id=user_id))

    async def drop_pending_correction(self, user_id: int, prediction_id: int | None = None) -> bool:
        return await self._write(
            functools.partial(sql.drop_pending_correction, user_id=user_id, prediction_id=prediction_id)
        )

    # ------------------------------------------------------------ statistics

    async def user_stats(self, user_id: int) -> UserStats:
        return await self._read(functools.partial(sql.user_stats, user_id=user_id), snapshot=True)

    async def global_stats(self) -> GlobalStats:
        return await self._read(functools.partial(sql.global_stats, now=time.time()), snapshot=True)

    # ------------------------------------------------------------ /forget

    async def forget(
        self, user_id: int, *, remove_copies: Callable[[list[str]], object] | None = None
    ) -> ForgetReport:
        """Delete every row about a user, and the photos (rows and files) nobody else sent.

        `remove_copies(sha256s)` deletes what was made from the user's photos outside the database
        (cached features, report pictures), in a thread. It runs before the rows go, so a crash in
        between leaves the user to forget again, never copies whose photos nobody can name any more;
        and again once the image files are gone, for copies a retraining job made meanwhile (from
        then on a job can no longer read the photos). A blocked user's block is kept.
        """
        sha256s: list[str] = []
        if remove_copies is not None:
            sha256s = await self._read(functools.partial(sql.user_photo_hashes, user_id=user_id))
            await asyncio.to_thread(remove_copies, sha256s)
        report, orphans = await self._write(
            functools.partial(sql.forget_user, user_id=user_id, now=time.time())
        )
        await self._remove_images(orphans)
        if remove_copies is not None:
            await asyncio.to_thread(remove_copies, sha256s)
        log.info(
            "forgot user %d: %d predictions, %d feedback, %d contributions, %d photos (%d files)%s",
            user_id,
            report.predictions,
            report.feedback,
            report.contributions,
            report.photos,
            report.files,
            "; the block is kept" if report.kept_block else "",
        )
        return report

    # ------------------------------------------------------------ the labelled data set

    async def labelled_set(
        self, model: str, *, validation_percent: int = DEFAULT_VALIDATION_PERCENT
    ) -> LabelledSet:
        """Photos with a known true label for `model`; see `storage.labelled`."""
        return await self._read(
            functools.partial(
                load_labelled_set,
                images_root=self.images.root,
                model=model,
                validation_percent=validation_percent,
            )
        )

    # ------------------------------------------------------------ retraining jobs and model events

    async def create_retrain_job(
        self,
        model: str,
        *,
        requested_by: int | None = None,
        chat_id: int | None = None,
        message_id: int | None = None,
    ) -> RetrainJob:
        """Queue a job; raises `JobAlreadyActive` (with `.job`) if one is queued or running."""
        return await self._write(
            functools.partial(
                sql.create_job,
                model=model,
                requested_by=requested_by,
                chat_id=chat_id,
                message_id=message_id,
                now=time.time(),
            )
        )

    async def start_retrain_job(self, job_id: int, pid: int) -> RetrainJob:
        return await self._write(functools.partial(sql.start_job, job_id=job_id, pid=pid, now=time.time()))

    async def update_retrain_job(
        self,
        job_id: int,
        *,
        stage: str | None = None,
        progress: float | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> RetrainJob:
        return await self._write(
            functools.partial(
                sql.update_job, job_id=job_id, stage=stage, progress=progress, detail=detail, now=time.time()
            )
        )

    async def finish_retrain_job(
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
        return await self._write(
            functools.partial(
                sql.finish_job,
                job_id=job_id,
                status=status,
                metrics=metrics,
                candidate_version=candidate_version,
                decision=decision,
                reason=reason,
                error=error,
                now=time.time(),
            )
        )

    async def fail_retrain_job(self, job_id: int, error: str) -> bool:
        """Mark a job failed if it is still queued or running (its process died); True if it was."""
        failed = await self._write(
            functools.partial(sql.fail_jobs, job_ids=[job_id], error=error, now=time.time())
        )
        return bool(failed)

    async def fail_abandoned_jobs(self, keep: Collection[int] = ()) -> list[int]:
        """Jobs still marked active whose process is gone are marked failed (at start, before /retrain).

        A queued job has no pid until its process claims it: the bot passes the jobs it watches itself
        as `keep`; any other queued job was left behind by a start that failed.
        """
        job = await self.active_retrain_job()
        if job is None or job.id in keep or (job.pid is not None and _process_alive(job.pid)):
            return []
        if job.pid is None:
            error = "the job never started (its start failed, or the bot stopped first)"
        else:
            error = "the job's process ended without finishing (killed, crashed, or the bot restarted)"
        return await self._write(
            functools.partial(sql.fail_jobs, job_ids=[job.id], error=error, now=time.time())
        )

    async def get_retrain_job(self, job_id: int) -> RetrainJob | None:
        return await self._read(functools.partial(sql.get_job, job_id=job_id))

    async def active_retrain_job(self) -> RetrainJob | None:
        return await self._read(sql.active_job)

    async def recent_retrain_jobs(self, model: str | None = None, limit: int = 10) -> list[RetrainJob]:
        return await self._read(functools.partial(sql.recent_jobs, model=model, limit=limit))

    async def record_model_event(
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
        """Log a promotion, rollback, rejection or seeding ("promote" / "rollback" / "reject" / "seed")."""
        return await self._write(
            functools.partial(
                sql.record_model_event,
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

    async def model_events(
        self, model: str | None = None, *, action: str | None = None, limit: int = 20
    ) -> list[ModelEvent]:
        """Newest first."""
        return await self._read(functools.partial(sql.model_events, model=model, action=action, limit=limit))

    # ------------------------------------------------------------ machinery

    async def _write(self, function: SqlFunction[T]) -> T:
        if self._closed:
            raise StorageError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(function, future))
        return await future

    async def _read(self, function: Callable[..., T], *, snapshot: bool = False) -> T:
        if self._closed:
            raise StorageError("the store is closed")
        call = _in_read_transaction(function) if snapshot else function
        return await _on_connection_thread(self._reader, call, self._reader_db)

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Write] = []
            item = await self._queue.get()
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Write]) -> None:
        functions = [write.function for write in batch]
        try:
            outcomes = await _on_connection_thread(self._writer, _commit_batch, self._writer_db, functions)
        except Exception as error:  # the whole transaction failed: nobody's write is durable
            log.exception("group commit of %d writes failed", len(batch))
            for write in batch:
                if not write.future.done():
                    write.future.set_exception(StorageError(f"the database write failed: {error}"))
            return
        self.batches += 1
        self.writes += len(batch)
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if write.future.done():  # the caller was cancelled; its write committed anyway
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    async def _remove_images(self, sha256s: list[str]) -> None:
        for sha256 in sha256s:
            await self._write(functools.partial(_delete_image_if_unused, images=self.images, sha256=sha256))

    async def _remove_unreferenced_images(self, min_age_s: float) -> None:
        candidates = await asyncio.to_thread(self.images.older_than, min_age_s)
        if not candidates:
            return
        removed = await self._write(
            functools.partial(_delete_unreferenced_images, images=self.images, sha256s=candidates)
        )
        if removed:
            log.info("removed %d image files that no photo row refers to (left by a crash)", removed)

    async def _finish_pending_image_deletions(self) -> None:
        """A /forget that crashed after its commit still has files queued: remove them now."""
        pending = await self._read(sql.pending_image_deletions)
        if pending:
            log.info("removing %d images queued by an interrupted /forget", len(pending))
            await self._remove_images(pending)


async def _connect(
    factory: Callable[[], sqlite3.Connection],
) -> tuple[aiosqlite.Connection, sqlite3.Connection]:
    """An aiosqlite connection whose thread opened `factory()`; we keep the raw handle for `_commit_batch`."""
    opened: list[sqlite3.Connection] = []

    def connector() -> sqlite3.Connection:
        db = factory()
        opened.append(db)
        return db

    connection = await aiosqlite.Connection(connector, iter_chunk_size=64)
    return connection, opened[0]


async def _on_connection_thread(
    connection: aiosqlite.Connection, function: Callable[..., T], db: sqlite3.Connection, *args: Any
) -> T:
    """Run `function(db, *args)` on the connection's own thread, in one hop.

    aiosqlite's public API costs one thread hop per statement; a group commit of 50 writes is ~300
    statements, so we hand the thread the whole batch at once through `_execute`, the internal method
    every public aiosqlite call goes through. It is private API: every storage test runs through
    here, so an aiosqlite release that changes it fails loudly, not silently.
    """
    # aiosqlite leaves its private `_execute` unannotated; it returns what `function` returns.
    result: T = await connection._execute(function, db, *args)  # type: ignore[no-untyped-call]
    return result


def _commit_batch(db: sqlite3.Connection, functions: list[SqlFunction[Any]]) -> list[tuple[bool, Any]]:
    """One transaction, one savepoint per write; a failing write is rolled back alone."""
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for function in functions:
            db.execute("SAVEPOINT write")
            try:
                outcomes.append((True, function(db)))
            except Exception as error:
                db.execute("ROLLBACK TO write")
                outcomes.append((False, error))
            db.execute("RELEASE write")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


def _in_read_transaction(function: Callable[..., T]) -> Callable[..., T]:
    """Several SELECTs that must agree (statistics) read one snapshot."""

    def run(db: sqlite3.Connection, *args: Any) -> T:
        db.execute("BEGIN")
        try:
            return function(db, *args)
        finally:
            db.execute("COMMIT")

    return run


def _delete_image_if_unused(db: sqlite3.Connection, *, images: ImageStore, sha256: str) -> bool:
    if sql.claim_image_deletion(db, sha256):
        return images.delete(sha256)
    return False


def _delete_unreferenced_images(db: sqlite3.Connection, *, images: ImageStore, sha256s: list[str]) -> int:
    """Under the write lock: a row for these bytes committed later finds its file gone and rewrites it."""
    removed = 0
    for sha256 in sha256s:
        if sql.get_photo(db, sha256) is None:
            removed += images.delete(sha256)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
