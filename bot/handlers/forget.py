"""/forget: delete everything stored about the user, after they confirm with a button.

Both the question and the answer say what deleting cannot reach (models already trained, reports
already sent, exports); a blocked user keeps their block, and is told so.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot import callbacks, keyboards
from bot.services import lang, services
from bot.texts import text

logger = logging.getLogger(__name__)


async def ask_to_forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Ask for confirmation before deleting anything."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    language = lang(update)
    await message.reply_text(
        _with_limits(language, text(language, "forget_confirm")),
        reply_markup=keyboards.forget(language, user.id),
    )


async def on_forget_choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete the user's data when they confirmed; only the user it was asked of may confirm."""
    query = update.callback_query
    if query is None:
        return
    language = lang(update)
    try:
        choice = callbacks.decode(query.data)
    except callbacks.MalformedCallback:
        await query.answer(text(language, "feedback_malformed"), show_alert=True)
        return
    if not isinstance(choice, callbacks.ForgetChoice) or choice.user_id != query.from_user.id:
        logger.warning(
            "User %s pressed a /forget button that is not theirs: %r", query.from_user.id, query.data
        )
        await query.answer(text(language, "forget_not_yours"), show_alert=True)
        return
    if not choice.confirmed:
        await query.answer()
        await query.edit_message_text(text(language, "forget_cancelled"))
        return
    found = services(context)
    async with found.lock(("user", choice.user_id)):
        report = await found.store.forget(choice.user_id)
    logger.info("Forgot user %s: %s", choice.user_id, report)
    done = text(language, "forget_done", photos=report.photos)
    if report.kept_block:
        done += "\n" + text(language, "forget_block_kept")
    await query.answer()
    await query.edit_message_text(_with_limits(language, done))


def _with_limits(language: str, message: str) -> str:
    """A /forget message followed by what deleting cannot take back."""
    return f"{message}\n\n{text(language, 'forget_not_undone')}"


def register(application: Application) -> None:
    application.add_handler(CommandHandler("forget", ask_to_forget))
    application.add_handler(CallbackQueryHandler(on_forget_choice, pattern=r"^f:"))
