"""/digit, /flower, /auto: the chat's mode, stored so that it survives a restart."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.services import lang, services
from bot.texts import text

MODE_OF_COMMAND = {"digit": "digit", "flower": "flower", "auto": "auto"}


async def set_mode(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Switch the chat's mode to the command's name."""
    command = update.effective_message.text.split()[0].lstrip("/").split("@")[0].lower()
    mode = MODE_OF_COMMAND[command]
    await services(context).set_chat_mode(update.effective_chat.id, mode)
    await update.effective_message.reply_text(text(lang(update), f"mode_{mode}"))


def register(application: Application) -> None:
    application.add_handler(CommandHandler(list(MODE_OF_COMMAND), set_mode))
