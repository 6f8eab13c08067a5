"""/forget: delete everything stored about the user, after they confirm with a button."""

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
    language = lang(update)
    await update.effective_message.reply_text(
        text(language, "forget_confirm"), reply_markup=keyboards.forget(language, update.effective_user.id)
    )


async def on_forget_choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete the user's data when they confirmed; only the user it was asked of may confirm."""
    query = update.callback_query
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
        await query.answer(text(language, "feedback_not_yours"), show_alert=True)
        return
    if not choice.confirmed:
        await query.answer()
        await query.edit_message_text(text(language, "forget_cancelled"))
        return
    found = services(context)
    async with found.lock(("user", choice.user_id)):
        report = await found.store.forget(choice.user_id)
        found.forget_chat(choice.user_id)  # the stored mode went with everything else
    logger.info("Forgot user %s: %s", choice.user_id, report)
    await query.answer()
    await query.edit_message_text(text(language, "forget_done", photos=report.photos))


def register(application: Application) -> None:
    application.add_handler(CommandHandler("forget", ask_to_forget))
    application.add_handler(CallbackQueryHandler(on_forget_choice, pattern=r"^f:"))
