"""A retrain job's life in the jobs table: claimed, its progress written as it goes, failed on SIGTERM.

The bot queues a job and starts `photobot retrain … --job-id N`; the command line creates its own. One
job runs at a time (storage refuses a second). Progress (stage, overall fraction, epoch, accuracy,
time left) is written at most once a second, so the bot can edit one message. SIGTERM (a polite kill)
becomes SystemExit, so the job is marked failed with that reason on the way out.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from storage import SyncStore

log = logging.getLogger(__name__)

# Share of the overall progress bar each stage takes (they add up to 1).
STAGES = {"loading": 0.05, "preprocessing": 0.10, "training": 0.70, "evaluating": 0.10, "report": 0.05}


class RetrainError(Exception):
    """The job cannot run; the message says why (shown to the admin and stored as the job's error)."""


class JobProgress:
    """Writes the job's stage, overall progress and details to the jobs table, at most every `every_s`."""

    def __init__(self, store: SyncStore | None, job_id: int | None, every_s: float = 1.0) -> None:
        self._store, self._job_id, self._every_s = store, job_id, every_s
        self._started = time.monotonic()
        self._last_write = 0.0
        self.stage = "loading"
        self.detail: dict[str, Any] = {}

    def enter(self, stage: str, message: str = "") -> None:
        self.stage = stage
        self.detail = {"message": message} if message else {}
        self._write(self._stage_start(stage), force=True)
        if message:
            log.info("%s: %s", stage, message)

    def within(self, fraction: float, force: bool = False, **detail: Any) -> None:
        """Progress inside the current stage (0..1), with details such as epoch and accuracy."""
        self.detail.update(detail)
        start = self._stage_start(self.stage)
        self._write(start + STAGES.get(self.stage, 0.0) * min(max(fraction, 0.0), 1.0), force=force)

    def _stage_start(self, stage: str) -> float:
        total = 0.0
        for name, share in STAGES.items():
            if name == stage:
                return total
            total += share
        return total

    def _write(self, progress: float, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self._every_s:
            return
        self._last_write = now
        elapsed = now - self._started
        eta = elapsed * (1.0 - progress) / progress if progress >= 0.08 else None
        detail = {**self.detail, "elapsed_s": round(elapsed, 1)}
        if eta is not None:
            detail["eta_s"] = round(eta, 1)
        if self._store is not None and self._job_id is not None:
            self._store.update_retrain_job(self._job_id, stage=self.stage, progress=progress, detail=detail)


def claim_job(
    store: SyncStore, model: str, job_id: int | None, requested_by: int | None, worker: str | None = None
) -> int:
    """Start the queued job `job_id` (or a new one) in this process; RetrainError if it cannot run.
    With `worker`, the job that worker claimed and started this process for."""
    from storage import JobAlreadyActive

    if job_id is None:
        try:
            job = store.create_retrain_job(model, requested_by=requested_by)
        except JobAlreadyActive as error:
            raise RetrainError(str(error)) from None
    else:
        queued = store.get_retrain_job(job_id)
        if queued is None:
            raise RetrainError(f"retrain job {job_id} does not exist")
        job = queued
        if job.model != model:
            raise RetrainError(f"retrain job {job.id} is for {job.model}, not {model}")
    try:
        store.start_retrain_job(job.id, os.getpid(), worker)
    except ValueError as error:
        raise RetrainError(str(error)) from None
    return job.id


@dataclass
class Stop:
    """Why the job was asked to stop, if it was: what the job's error says then, whatever exception
    the signal surfaced as (inside Keras' tf.data iterator a SystemExit comes out as a ValueError)."""

    reason: str | None = None


@contextmanager
def sigterm_as_exit(stop: Stop | None = None) -> Iterator[None]:
    """SIGTERM (a polite kill) becomes SystemExit, so the job is marked failed on the way out; the
    reason is kept in `stop`."""

    def on_signal(signum: int, _frame: object) -> None:
        reason = f"stopped by signal {signal.Signals(signum).name}"
        if stop is not None:
            stop.reason = reason
        raise SystemExit(reason)

    try:
        previous = signal.signal(signal.SIGTERM, on_signal)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def error_text(error: BaseException) -> str:
    """What the job's error says: the RetrainError's message, the signal, or the exception."""
    if isinstance(error, RetrainError):
        return str(error)
    if isinstance(error, SystemExit):
        return str(error.code) if error.code not in (None, 0) else "the job was stopped"
    if isinstance(error, KeyboardInterrupt):
        return "the job was interrupted"
    return f"{type(error).__name__}: {error}"
