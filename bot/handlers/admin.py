"""Admin commands (Telegram user ids in ADMIN_IDS): /retrain, /models, /rollback, /block, /unblock.

Anyone else gets "not allowed", the attempt is logged, and nothing happens.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot import retraining
from bot.callbacks import MAX_ID_DIGITS
from bot.services import Services, lang, services
from bot.texts import text
from inference.errors import InferenceError

logger = logging.getLogger(__name__)

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]
VERSIONS_SHOWN = 5
# ASCII digits, and few enough to fit SQLite's integers: `str.isdigit` also passes "²", which int() refuses.
_NUMBER = re.compile(rf"[0-9]{{1,{MAX_ID_DIGITS}}}")


def admin_only(handler: Handler) -> Handler:
    """Run `handler` for admins only; tell anyone else it is not allowed and log the attempt."""

    @functools.wraps(handler)
    async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user_id = update.effective_user.id if update.effective_user else None
        if not services(context).is_admin(user_id):
            # The command's name only: the rest is anyone's free text, and logs are kept and shared.
            logger.warning("Non-admin user %s tried %s", user_id, _command_name(update))
            await update.effective_message.reply_text(text(lang(update), "not_allowed"))
            return
        await handler(update, context)

    return guarded


def _command_name(update: Update) -> str:
    """`/retrain` of "/retrain@PhotoBot whatever follows" (CommandHandler checked it is a command)."""
    words = (update.effective_message.text or "").split(maxsplit=1)
    return words[0].split("@", 1)[0] if words else "?"


@admin_only
async def retrain(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start a retraining job in its own process and show its progress: `/retrain [model] [force]`."""
    args = context.args or []
    names = services(context).catalogue.names
    model, force = (args[0] if args else ""), args[1:] == ["force"]
    if model not in names or (len(args) > 1 and not force):
        await update.effective_message.reply_text(
            text(lang(update), "retrain_usage", models=", ".join(names))
        )
        return
    await retraining.start_retrain(
        services(context),
        context.application.bot_data,
        context.bot,
        model,
        chat_id=update.effective_chat.id,
        requested_by=update.effective_user.id,
        force=force,
    )


@admin_only
async def list_models(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List each model's latest versions with their metrics, marking the one that serves."""
    found = services(context)
    lines = await asyncio.to_thread(models_lines, found, lang(update))
    await update.effective_message.reply_text("\n".join(lines))


def models_lines(found: Services, language: str) -> list[str]:
    lines = [text(language, "models_header")]
    for name in found.model_store.names():
        active = found.model_store.active_version(name)
        for version in found.model_store.versions(name)[-VERSIONS_SHOWN:]:
            lines.append(
                text(
                    language,
                    "models_line",
                    name=name,
                    version=version.version,
                    serving=text(language, "serving_mark") if version.version == active else "",
                    status=version.meta.get("status", "ready"),
                    metrics=_metrics(version.meta.get("metrics")),
                )
            )
    return lines if len(lines) > 1 else [text(language, "models_none")]


def _metrics(metrics: object) -> str:
    if not isinstance(metrics, dict):
        return ""
    shown = [
        f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return (", " + ", ".join(shown[:3])) if shown else ""


@admin_only
async def rollback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Serve an earlier version of a model: `/rollback <model> [version]`, without a restart."""
    args = context.args or []
    language = lang(update)
    version = number_arg(args[1]) if len(args) == 2 else None
    names = services(context).catalogue.names
    if not 1 <= len(args) <= 2 or args[0] not in names or (len(args) == 2 and version is None):
        await update.effective_message.reply_text(text(language, "rollback_usage", models=", ".join(names)))
        return
    found = services(context)
    name = args[0]
    previous = found.model_store.active_version(name)
    try:
        target = await asyncio.to_thread(found.model_store.rollback, name, version)
        await found.classifier.reload(name)
    except InferenceError as error:
        if found.model_store.active_version(name) != previous and previous is not None:
            await asyncio.to_thread(found.model_store.promote, name, previous)  # the new one would not load
        await update.effective_message.reply_text(text(language, "rollback_failed", reason=str(error)))
        return
    await found.store.record_model_event(
        name, "rollback", from_version=previous, to_version=target.version, actor=update.effective_user.id
    )
    logger.info(
        "User %s rolled %s back from v%s to v%s", update.effective_user.id, name, previous, target.version
    )
    await update.effective_message.reply_text(
        text(language, "rollback_done", name=name, version=target.version)
    )


@admin_only
async def block(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop using a user's labels: `/block <user id>`."""
    await _set_blocked(update, context, blocked=True)


@admin_only
async def unblock(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Use a user's labels again: `/unblock <user id>`."""
    await _set_blocked(update, context, blocked=False)


async def _set_blocked(update: Update, context: ContextTypes.DEFAULT_TYPE, *, blocked: bool) -> None:
    args = context.args or []
    language = lang(update)
    user_id = number_arg(args[0]) if len(args) == 1 else None
    if user_id is None:
        await update.effective_message.reply_text(
            text(language, "block_usage" if blocked else "unblock_usage")
        )
        return
    await services(context).store.set_blocked(user_id, blocked)
    logger.info(
        "User %s %s user %s", update.effective_user.id, "blocked" if blocked else "unblocked", user_id
    )
    await update.effective_message.reply_text(
        text(language, "blocked" if blocked else "unblocked", user=user_id)
    )


def number_arg(arg: str) -> int | None:
    """A user id or version typed after a command; None for anything but 1 to 18 ASCII digits."""
    return int(arg) if _NUMBER.fullmatch(arg) else None


def register(application: Application) -> None:
    application.add_handler(CommandHandler("retrain", retrain))
    application.add_handler(CommandHandler("models", list_models))
    application.add_handler(CommandHandler("rollback", rollback))
    application.add_handler(CommandHandler("block", block))
    application.add_handler(CommandHandler("unblock", unblock))
