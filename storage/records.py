"""What the storage API returns: small frozen dataclasses of plain values, and the strings it accepts.

`storage` imports nothing of ours, so modes, statuses and verdicts are plain strings checked here.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Verdict = Literal["correct", "wrong"]
JobStatus = Literal["queued", "running", "succeeded", "rejected", "failed"]

MODES = ("auto", "digit", "flower")  # the built-in chat modes; a model of the catalogue adds its own
_MODE = re.compile(r"[a-z][a-z0-9_]{0,19}")  # how any mode is spelled (schema 4 stores 1 to 20 chars)
STATUSES = ("ok", "unsure", "not_recognized")
VERDICTS = ("correct", "wrong")
JOB_STATUSES = ("queued", "running", "succeeded", "rejected", "failed")
ACTIVE_JOB_STATUSES = ("queued", "running")
FINISHED_JOB_STATUSES = ("succeeded", "rejected", "failed")
# Who runs a job: "local", the process that queued it (the bot, or `photobot retrain`) starts it on its
# machine; "worker", a `photobot worker` claims it and holds it by a lease (storage.queries.leases).
JOB_RUNNERS = ("local", "worker")

# The true label of a photo that is not something the model knows ("Not a digit" / "Not a flower").
NOT_A_DIGIT = "not_a_digit"
NOT_A_FLOWER = "not_a_flower"
NEGATIVE_LABELS: dict[str, str] = {"digits": NOT_A_DIGIT, "flowers": NOT_A_FLOWER}


def negative_label(model: str) -> str:
    """The true label of a photo that is none of `model`'s labels (`not_a_digit`; `not_birds`)."""
    return NEGATIVE_LABELS.get(model, f"not_{model}")


class Answer(Protocol):
    """What `Store.record_photo_prediction` reads from an answer (inference's frozen `Prediction` fits:
    read-only properties, so a frozen dataclass matches)."""

    @property
    def model(self) -> str | None: ...
    @property
    def version(self) -> int | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def confidence(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def top(self) -> Sequence[tuple[str, float]]: ...  # (label, probability), best first
    @property
    def reason(self) -> str | None: ...


@dataclass(frozen=True)
class User:
    id: int
    language: str | None
    first_seen: float
    last_seen: float
    blocked: bool


@dataclass(frozen=True)
class Photo:
    sha256: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    path: str  # relative to the image store's root; `ImageStore.path(sha256)` gives the file


@dataclass(frozen=True)
class PredictionRecord:
    id: int
    user_id: int
    chat_id: int
    message_id: int | None
    photo_sha256: str
    mode: str | None
    model: str | None
    version: int | None
    label: str | None
    confidence: float
    probabilities: list[tuple[str, float]]
    status: str
    reason: str | None
    latency_ms: float | None
    created_at: float


@dataclass(frozen=True)
class Feedback:
    prediction_id: int
    user_id: int
    verdict: str
    model: str
    true_label: str
    created_at: float


@dataclass(frozen=True)
class FeedbackResult:
    """`created` is False when feedback already existed: `feedback` is then the answer that stands."""

    feedback: Feedback
    created: bool


@dataclass(frozen=True)
class PendingCorrection:
    """A number answer the person said is wrong: the bot waits for them to type the right number."""

    user_id: int
    prediction_id: int
    chat_id: int
    answer_message_id: int | None
    question_message_id: int | None
    created_at: float


@dataclass(frozen=True)
class UserStats:
    user_id: int
    photos: int  # distinct photos this user sent (the same photo twice counts once)
    feedback: int  # answers they gave
    correct: int  # … saying the bot was right
    wrong: int
    contributions: int  # photos sent with a label in the caption

    @property
    def accuracy(self) -> float | None:
        """How often the bot was right, among the answers this user judged."""
        judged = self.correct + self.wrong
        return self.correct / judged if judged else None


@dataclass(frozen=True)
class ModelStats:
    predictions: int
    feedback: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None


@dataclass(frozen=True)
class GlobalStats:
    users: int
    blocked_users: int
    active_users_24h: int
    photos: int  # each person's distinct photos, summed: what every /stats and /forget count
    predictions: int
    predictions_24h: int
    by_status: dict[str, int]
    by_model: dict[str, ModelStats]  # key "none" for photos that were neither
    feedback: int
    contributions: int
    median_latency_ms: float | None


@dataclass(frozen=True)
class ForgetReport:
    user_id: int
    predictions: int
    feedback: int
    contributions: int
    photos: int  # the user's distinct photos, gone from their account (what /stats counted)
    kept_block: bool = False  # blocked: the id stays, with the block and nothing else
    files: int = 0  # photo rows and image files deleted (those nobody else sent)


@dataclass(frozen=True)
class RetrainJob:
    id: int
    model: str
    requested_by: int | None
    chat_id: int | None
    message_id: int | None
    status: str
    pid: int | None
    stage: str | None
    progress: float | None
    detail: dict[str, Any]
    metrics: dict[str, Any]
    candidate_version: int | None
    decision: str | None
    reason: str | None
    error: str | None
    created_at: float
    started_at: float | None
    updated_at: float
    finished_at: float | None
    language: str | None = None  # the asking admin's: progress and report are in it
    watcher: str | None = None  # "host/pid" of the bot process showing its progress (its process runs there)
    watched_at: float | None = None  # when that bot process last looked; None once it let go
    runner: str = "local"  # JOB_RUNNERS: who starts it, the process that queued it or a worker
    forced: bool = False  # train even with few new labelled photos (/retrain MODEL force)
    worker: str | None = None  # "host/pid/tag" of the `photobot worker` that claimed it
    lease_until: float | None = None  # that worker holds it until then, unless it renews the lease

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES

    @property
    def lease_expired(self) -> bool:
        """A worker's job failed after its lease ran out: by whoever saw it, not by its own worker."""
        return (
            self.status == "failed"
            and self.runner == "worker"
            and self.lease_until is not None
            and self.finished_at is not None
            and self.finished_at > self.lease_until
        )


def new_watcher() -> str:
    """A bot process's name in `retrain_jobs.watcher`: its host (where the jobs it starts run, so where
    their pids mean something), its pid, and a tag that tells two bots of one process apart (tests)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def watcher_host(watcher: str | None) -> str | None:
    return watcher.split("/", 1)[0] if watcher else None


def watcher_pid(watcher: str | None) -> int | None:
    """The process id in a watcher's name (None for a name without one)."""
    parts = (watcher or "").split("/")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


@dataclass(frozen=True)
class ModelEvent:
    id: int
    model: str
    action: str
    from_version: int | None
    to_version: int | None
    actor: int | None
    reason: str | None
    job_id: int | None
    created_at: float


def check_mode(mode: str) -> None:
    """A chat mode spelled as the schema stores it: a short lowercase name. Which modes exist is the
    catalogue's business (storage imports nothing of ours), so a model added to it needs no change here."""
    if not isinstance(mode, str) or _MODE.fullmatch(mode) is None:
        raise ValueError(
            f"mode must be a lowercase name of 1 to 20 letters, digits or _ (e.g. {', '.join(MODES)}); "
            f"got {mode!r}"
        )


def check_choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class FloodWindow:
    """A user's current flood window of one kind: when it opened (unix time) and what it has counted."""

    start: float
    count: int
