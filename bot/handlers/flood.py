"""The first look at every update: one from a user over the per-user limit stops here, before any work.

Each update costs a reply, and the replies to everyone share Telegram's ~30 messages/s; so one account's
burst of texts, commands, files, stickers or button presses gets at most USER_UPDATES_PER_MINUTE
answers a minute and one "slow down", however long it goes on. The check runs in group -1, ahead of
every other handler, and ends the update there (ApplicationHandlerStop). Admins are not limited: they
already hold /retrain and /rollback, and an operator cut off during an incident helps no one. Photos
also count against their own, lower limit (USER_PHOTOS_PER_MINUTE, checked by the photo handler).
Both are counted in the database (`bot.limits`), so bot processes that share it hold them together.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes, TypeHandler

from bot.services import lang, services
from bot.texts import text

logger = logging.getLogger(__name__)

GROUP = -1  # after catching up with other bot processes (group -2), before the handlers' group 0


async def limit_updates(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop an update from a user over the limit; tell them once per window when to try again."""
    user, found = update.effective_user, services(context)
    if user is None or found.is_admin(user.id):
        return
    decision = await found.update_limiter.check(user.id)
    if decision.allowed:
        return
    found.metrics.flood_dropped("updates")
    if decision.notify:
        seconds = max(1, round(decision.retry_after_s))
        logger.info("User %s is over the update limit; dropping their updates for %d s", user.id, seconds)
        await _tell(update, text(lang(update), "slow_down", seconds=seconds))
    raise ApplicationHandlerStop


async def _tell(update: Update, message: str) -> None:
    """A button press is answered on the button (that stops its spinner too); anything else in the chat."""
    if update.callback_query is not None:
        await update.callback_query.answer(message, show_alert=True)
    elif update.effective_message is not None:
        await update.effective_message.reply_text(message)


def register(application: Application) -> None:
    application.add_handler(TypeHandler(Update, limit_updates), group=GROUP)
