"""/start and /help, and a clear reply to everything the bot does not read (stickers, videos, voice, text)."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from bot.services import lang, services
from bot.texts import text
from inference.catalogue import Catalogue, ModelKind


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet the user and say what the bot does."""
    message, user = update.effective_message, update.effective_user
    if message is None:
        return
    greeting = text(lang(update), "start", name=user.first_name if user else "")
    await message.reply_text(f"{greeting}\n\n{help_text(update, context)}")


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Say what the bot does and which commands it knows (an admin's too, for an admin)."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(help_text(update, context))


def help_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
    """The help; an admin also reads the admin commands, which nobody else may use."""
    found, language = services(context), lang(update)
    user_id = update.effective_user.id if update.effective_user else None
    flowers = shipped_labels(context.bot_data["catalogue"], found.catalogue, language)
    helped = text(language, "help", flowers=", ".join(flowers))
    if found.is_admin(user_id):
        return f"{helped}\n\n{text(language, 'help_admin')}"
    return helped


def shipped_labels(commands: Catalogue, serving: Catalogue, language: str) -> list[str]:
    """What the shipped image models (those with a chat command) know, as people read it, with the
    labels admins added to them since (`/addlabel flowers lavender`, in `serving`): the models taught
    here are `/use`'s to list."""
    shipped = (spec for spec in commands.of_kind(ModelKind.IMAGE_CLASSIFIER) if spec.shipped)
    return [label.shown(language) for spec in shipped for label in (serving.get(spec.name) or spec).labels]


async def refuse_sticker(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers are not photos."""
    await _reply(update, "sticker")


async def refuse_video(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Videos, animations (GIFs sent as animations) and video notes are not read."""
    await _reply(update, "video")


async def refuse_audio(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Voice messages and audio are not read."""
    await _reply(update, "voice")


async def hint(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text: say what to send instead."""
    await _reply(update, "text_hint")


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A command this bot does not have."""
    await _reply(update, "unknown_command")


async def _reply(update: Update, key: str) -> None:
    """Answer with one text; an update without a message to answer (a channel post) gets none."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(text(lang(update), key))


def register_commands(application: Application) -> None:
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CommandHandler("help", help_command))


def register_fallbacks(application: Application) -> None:
    application.add_handler(MessageHandler(filters.Sticker.ALL, refuse_sticker))
    application.add_handler(
        MessageHandler(filters.VIDEO | filters.ANIMATION | filters.VIDEO_NOTE, refuse_video)
    )
    application.add_handler(MessageHandler(filters.VOICE | filters.AUDIO, refuse_audio))
    application.add_handler(MessageHandler(filters.COMMAND, unknown_command))
    application.add_handler(MessageHandler(filters.TEXT & filters.ChatType.PRIVATE, hint))  # not in groups
    # What Telegram lets people send besides text and media: a place, a contact, a dice roll, a poll.
    others = filters.LOCATION | filters.VENUE | filters.CONTACT | filters.Dice.ALL | filters.POLL
    application.add_handler(MessageHandler(others & filters.ChatType.PRIVATE, hint))
