"""`Store`: the bot's typed async API over the database (a SQLite file, or PostgreSQL) and the image store.

Every write is durable when its `await` returns: writes go through group commit (one transaction for
whatever is queued, see `storage.group_commit`), and reads run on a second connection, so they never
wait behind a batch of writes. This module holds the calls about people, photos, predictions, feedback
and /forget; the calls about models (taught models, retraining jobs, model events) are inherited from
`storage.store_models`, those about what the bot keeps between updates from `storage.store_state`,
those about photo bytes and this machine's cache of them from `storage.store_photos`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from storage import photo_bytes, sql
from storage.connect import DEFAULT_BUSY_TIMEOUT_S, open_database
from storage.dialect import Connection, Database, describe, is_postgres_url
from storage.errors import StorageError
from storage.group_commit import ConnectionThread, open_connection
from storage.images import ImageStore, StoredImage
from storage.labelled import DEFAULT_VALIDATION_PERCENT, LabelledSet, load_labelled_set
from storage.records import (
    Answer,
    Feedback,
    FeedbackResult,
    ForgetReport,
    GlobalStats,
    PendingCorrection,
    Photo,
    PredictionRecord,
    User,
    UserStats,
)
from storage.schema import schema_version
from storage.store_models import ModelCalls
from storage.store_photos import PhotoCalls
from storage.store_state import StateCalls
from storage.store_updates import UpdateCalls

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RecordedPrediction:
    prediction_id: int
    photo: Photo


class Store(ModelCalls, StateCalls, PhotoCalls, UpdateCalls):
    """Open with `await Store.open(database, images_dir)`; close with `await store.close()`.

    `database` is a SQLite file or a `postgresql://` URL (see `storage.connect.open_database`).
    """

    def __init__(
        self,
        database: Database,
        writer: ConnectionThread,
        reader: ConnectionThread,
        images: ImageStore,
        max_batch: int,
        image_threads: int,
    ) -> None:
        self.database = database
        self.images = images
        # Writing an image is mostly waiting for fsync; many in flight let the filesystem batch them.
        self._image_writers = ThreadPoolExecutor(image_threads, thread_name_prefix="storage-images")
        super().__init__(writer, reader, max_batch)
        self.schema_version = 0

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        database: Database,
        images_dir: Path | str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_batch: int = 256,
        image_threads: int = 16,
        orphan_min_age_s: float = 600.0,
        cache_sweep_s: float = 600.0,
        remove_copies: Callable[[list[str]], object] | None = None,
    ) -> Store:
        """Open (creating or migrating) the database, clean up after a crash, start the writer.

        Clean-up: temporary image files of dead writers, image deletions an interrupted /forget had
        queued, and cached image files no row refers to that are older than `orphan_min_age_s` (a
        photo forgotten, on this machine or another, or a crash between writing a photo's file and
        its row; younger ones may be a write in flight), again every `cache_sweep_s` (0: only now), and
        with it `remove_copies(sha256s)` of the photos a /forget removed, on any machine.
        Photos stored before their bytes were kept in the database get them from the cache.
        """
        sqlite = not is_postgres_url(database)
        if sqlite:
            database = Path(database)
        images = await asyncio.to_thread(ImageStore(images_dir).open)
        try:
            writer = await open_connection(
                lambda: open_database(database, busy_timeout_s=busy_timeout_s), sqlite=sqlite
            )
        except BaseException:
            images.close()
            raise
        try:
            reader = await open_connection(
                lambda: open_database(database, busy_timeout_s=busy_timeout_s, read_only=True), sqlite=sqlite
            )
        except BaseException:
            await writer.close()
            images.close()
            raise
        store = cls(database, writer, reader, images, max_batch, image_threads)
        store.schema_version = await store._read(schema_version)
        await store._finish_pending_image_deletions()
        await store.sweep_cache(orphan_min_age_s)
        store._remove_copies = remove_copies
        await store.apply_forgotten()
        await store._backfill_photo_bytes()
        store._start_sweeping(cache_sweep_s, orphan_min_age_s)
        log.info(
            "storage open: %s (schema %d), images in %s",
            describe(database),
            store.schema_version,
            images.root,
        )
        return store

    async def close(self) -> None:
        """Commit what is queued, then close both connections and release the image store."""
        if self._closed:
            return
        self._closed = True
        await self._stop_sweeping()
        await self._stop_writing()
        self._image_writers.shutdown(wait=True)
        self.images.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ users and chats

    async def touch_user(self, user_id: int, *, language: str | None = None) -> User:
        """Note that a user was seen (creating them); `language` is Telegram's language_code."""

        def touch(db: Connection) -> User:
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

        The bytes are in the database, in the row's transaction, so a row never points at missing
        bytes; the file in this machine's cache is written first.
        """
        photo, _ = await self._store_photo_then(data, width, height, format, lambda db, photo: None)
        return photo

    async def save_image(self, data: bytes) -> StoredImage:
        """Write a photo's file into this machine's cache (fsynced), ahead of its row: the bot does it
        while the models look at the photo, then passes it to `record_photo_prediction(image=…)`.

        A file that gets no row must go through `discard_image`; one left by a crash in between is
        removed by the clean-up sweep (files no row refers to, once `orphan_min_age_s` old).
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

        def record(db: Connection, photo: Photo) -> int:
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
        then: Callable[[Connection, Photo], T],
        saved: StoredImage | None = None,
    ) -> tuple[Photo, T]:
        """Write the cached file (in a thread) unless it is `saved`, then insert the photo's row and
        bytes and run `then`, in one transaction."""
        stored = saved or await self.save_image(data)
        photo = Photo(stored.sha256, stored.size, width, height, image_format, stored.path)

        def insert(db: Connection) -> T:
            sql.insert_photo(
                db, photo.sha256, photo.size, photo.path, width, height, image_format, time.time()
            )
            photo_bytes.store_bytes(db, photo.sha256, data)
            return then(db, photo)

        return photo, await self._write(insert)

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
        edited: bool = False,
    ) -> int:
        """A stored photo sent with its label as the caption: a labelled example without feedback.
        A message recorded again keeps its first label, unless it was `edited`."""
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
                edited=edited,
            )
        )

    async def withdraw_contribution(self, chat_id: int, message_id: int) -> bool:
        """Take back the caption's label of a message edited to name none; whether there was one."""
        return bool(
            await self._write(
                functools.partial(sql.withdraw_contribution, chat_id=chat_id, message_id=message_id)
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

    async def forget(self, user_id: int) -> ForgetReport:
        """Delete every row about a user, and the photos (rows and files) nobody else sent.

        The store's `remove_copies(sha256s)` (see `open`) deletes what this machine made of the user's
        photos outside the database (cached features, report pictures), in a thread. It runs before
        the rows go, so a crash in between leaves the user to forget again, never copies whose photos
        nobody can name any more; and again once the image files are gone, for copies a retraining job
        made meanwhile (from then on a job can no longer read the photos). Other machines remove
        theirs at their next cache sweep (`apply_forgotten`). A blocked user's block is kept.
        """
        remove_copies = self._remove_copies
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
