"""Domain errors mapped to replies in one place, and the one error handler for everything else."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import BadRequest, Forbidden, NetworkError, TimedOut
from telegram.ext import ContextTypes

from bot.services import KEY, Services, lang
from bot.texts import text
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from inference.errors import (
    DeadlineExceeded,
    EngineBusy,
    ImageTooLarge,
    InferenceError,
    InferenceUnavailable,
    ModelUnavailable,
    UnsupportedImage,
)
from storage.errors import DatabaseUnavailable, WriteFailed

logger = logging.getLogger(__name__)


def reply_for(
    error: InferenceError, language: str, mode: str = "auto", catalogue: Catalogue = DEFAULT_CATALOGUE
) -> str:
    """The message a user sees when their photo could not be answered."""
    reason = _reason(error, language)
    if isinstance(error, ImageTooLarge):
        return text(language, "image_too_large", reason=reason)
    if isinstance(error, UnsupportedImage):
        return text(language, "unsupported_image", reason=reason)
    if isinstance(error, EngineBusy):
        return text(language, "busy")
    if isinstance(error, DeadlineExceeded):
        return text(language, "timeout")
    if isinstance(error, InferenceUnavailable):
        return text(language, "inference_down")
    if isinstance(error, ModelUnavailable):
        spec = catalogue.for_mode(mode) or DEFAULT_CATALOGUE.for_mode(mode)  # a model that does not serve
        shown = spec.shown(language) if spec else "/".join(s.shown(language) for s in catalogue)
        return text(language, "model_unavailable", mode=shown)
    return text(language, "internal_error")


def _reason(error: InferenceError, language: str) -> str:
    """Why, in the user's language when the error names a reason (`reason_<key>` in bot.texts)."""
    key = getattr(error, "reason", None)
    if key:
        return text(language, f"reason_{key}", **getattr(error, "values", {}))
    return str(error).strip() or type(error).__name__


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log any error a handler did not expect, and tell the user something useful."""
    error = context.error
    found: Services | None = context.application.bot_data.get(KEY)
    if isinstance(error, NetworkError | TimedOut) and not isinstance(error, BadRequest):
        if found is not None:
            found.metrics.error("telegram")
        logger.warning("Telegram could not be reached: %s", error)
        return
    if isinstance(error, Forbidden):  # the person blocked the bot, or left the group: nobody to tell
        logger.info("Telegram refused a call: %s", error)
        return
    if isinstance(error, WriteFailed | DatabaseUnavailable):  # passing: the person can send it again
        if found is not None:
            found.metrics.error("database")
        logger.warning("The database failed an update's write: %s", error)
        await _tell(update, context, "database_busy")
        return
    if found is not None:
        found.metrics.error("handler")
    logger.error("Error while handling an update", exc_info=error)
    await _tell(update, context, "internal_error")


async def _tell(update: object, context: ContextTypes.DEFAULT_TYPE, key: str) -> None:
    """Say `key` to the person whose update failed: an alert under a pressed button, else a message."""
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text(lang(update), key), show_alert=True)
        else:
            await context.bot.send_message(update.effective_chat.id, text(lang(update), key))
    except Exception as reply_error:  # the reply itself failed: logging it is all we can do
        logger.warning("Could not tell the user about the error: %s", reply_error)
