"""/auto, one command per model's chat mode (/digit, /flower) and /use MODEL: the chat's mode, stored so
that it survives a restart."""

from __future__ import annotations

from collections.abc import Sequence

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.services import lang, services
from bot.texts import TEXTS, text, usage
from inference.catalogue import Catalogue


async def set_mode(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Switch the chat's mode to the command's name (`/digit` → digit)."""
    if update.effective_message is None:
        return
    command = (update.effective_message.text or "").split()[0].lstrip("/").split("@")[0].lower()
    await _switch(update, context, command)


async def use_model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/use MODEL`: read every photo of this chat with that model."""
    message = update.effective_message
    if message is None:
        return
    catalogue = services(context).catalogue
    name = (context.args or [""])[0].lower()
    spec = catalogue.get(name)
    if spec is None or len(context.args or ()) != 1:
        given = name if context.args else None
        reply = usage(lang(update), "use_usage", given, catalogue.names, models=", ".join(catalogue.names))
        await message.reply_text(reply)
        return
    status = services(context).classifier.models().get(spec.name)
    if status is None or status.version is None:  # a taught model before its first version
        labels = ", ".join(spec.label_names)
        example = spec.label_names[0] if spec.label_names else ""
        await message.reply_text(
            text(lang(update), "use_not_serving", model=spec.name, labels=labels, example=example)
        )
        return
    await _switch(update, context, spec.mode)


async def _switch(update: Update, context: ContextTypes.DEFAULT_TYPE, mode: str) -> None:
    chat, message = update.effective_chat, update.effective_message
    if chat is None or message is None:
        return
    found = services(context)
    await found.set_chat_mode(chat.id, mode)
    spec = found.catalogue.for_mode(mode)
    answering = found.answering(spec.name) if spec else None
    await message.reply_text(mode_text(lang(update), found.catalogue, mode, answering))


def mode_text(language: str, catalogue: Catalogue, mode: str, answering: Sequence[str] | None = None) -> str:
    """What a mode means, in the user's language: its own text where it has one, else the labels its
    model answers with (`answering`; the catalogue's when not given)."""
    if f"mode_{mode}" in TEXTS["en"]:
        return text(language, f"mode_{mode}")
    spec = catalogue.for_mode(mode)
    names = answering if answering is not None else (spec.label_names if spec else ())
    labels = ", ".join(spec.shown_label(name, language) for name in names) if spec else ""
    return text(language, "mode_model", model=spec.shown(language) if spec else mode, labels=labels)


def register(application: Application) -> None:
    catalogue: Catalogue = application.bot_data["catalogue"]
    application.add_handler(CommandHandler(list(catalogue.modes), set_mode))
    application.add_handler(CommandHandler("use", use_model))
