"""Domain errors of `inference`. The bot maps each to one reply, in one place."""

from __future__ import annotations


class InferenceError(Exception):
    """Base class: a photo could not be answered.

    The message is for logs, in English. What the user reads is chosen by `reason`, a key of
    `bot.texts` (`reason_<key>`, in every language) filled in with `values`, so that no English string
    inside an exception reaches a Russian user; an error without a reason gets its class's generic reply.
    """

    def __init__(self, message: str = "", *, reason: str | None = None, **values: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.values = values


class UnsupportedImage(InferenceError):
    """The bytes are not an image we can read (wrong type, corrupt, truncated, animated, odd shape)."""


class ImageTooLarge(InferenceError):
    """Too many bytes or too many pixels (a possible decompression bomb)."""


class EngineBusy(InferenceError):
    """The model's queue is full: try again in a moment."""


class DeadlineExceeded(InferenceError):
    """The photo was not answered within its deadline."""


class ModelUnavailable(InferenceError):
    """No usable version of the model is loaded (missing, corrupt or still loading)."""


class WorkerLost(InferenceError):
    """The process preparing this photo ended before it answered (a crashed decoder, the OOM killer)."""


class InferenceUnavailable(ModelUnavailable):
    """The inference service (INFERENCE_URL) cannot answer: not reached, timed out, or failing, also on
    the retry. Every photo fails alike until it is back; the bot says so, and keeps what it can."""


def counted_as(error: InferenceError) -> tuple[str, str]:
    """How the metrics count a photo `error` left unanswered: ("refused", reason) when the photo or the
    load is why (the person is told), ("error", kind) when something on our side failed."""
    for cls, reason in _REFUSED:
        if isinstance(error, cls):
            return "refused", reason
    return "error", next((kind for cls, kind in _FAILED if isinstance(error, cls)), "inference")


_REFUSED: tuple[tuple[type[InferenceError], str], ...] = (
    (ImageTooLarge, "too_large"),
    (UnsupportedImage, "unsupported"),
    (EngineBusy, "busy"),
)
_FAILED: tuple[tuple[type[InferenceError], str], ...] = (  # subclasses before their base
    (DeadlineExceeded, "deadline"),
    (InferenceUnavailable, "inference_unavailable"),
    (ModelUnavailable, "model_unavailable"),
    (WorkerLost, "worker_lost"),
)
