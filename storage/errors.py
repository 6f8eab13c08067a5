"""Errors the storage layer raises; callers map them to replies (the bot) or one-line failures (the CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.records import RetrainJob


class StorageError(Exception):
    """Base class for every error raised on purpose by `storage`."""


class SchemaTooNew(StorageError):
    """The database was written by a newer PhotoBot; opening it here could damage it, so we refuse."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or opened (DATABASE_URL: host, password, database name)."""


class WriteFailed(StorageError):
    """A transaction failed as a whole (the database went away, or its write lock was held past the
    busy timeout): nothing of it is stored, and the same write later may well succeed."""


class PredictionNotFound(StorageError):
    """The prediction does not exist (never did, or it was deleted by /forget): a stale button."""


class NotPredictionOwner(StorageError):
    """Someone other than the photo's sender tried to answer for it: a forged or foreign button."""


class JobAlreadyActive(StorageError):
    """A retrain job is already queued or running; only one runs at a time."""

    def __init__(self, message: str, job: RetrainJob) -> None:
        super().__init__(message)
        self.job = job
