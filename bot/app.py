"""The one composition root: `build_application(settings)` returns the bot, ready to run.

Nothing heavy happens here or at import time: the engine, the models and the database are opened in
`post_init` (when the application starts) and closed in `post_shutdown`, after the last update in
flight has been answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from telegram import BotCommand
from telegram.ext import AIORateLimiter, Application

from bot import handlers
from bot.errors import on_error
from bot.limits import FloodLimiter
from bot.services import KEY, MODEL_NAMES, Services
from bot.texts import COMMANDS
from bot.transport import bot_api_request, get_updates_request

if TYPE_CHECKING:
    from photobot.settings import Settings

logger = logging.getLogger(__name__)

CONCURRENT_UPDATES = 256  # photos handled at once; the engine's own queue bounds the real work


def build_application(settings: Settings, *, models: Sequence[str] = MODEL_NAMES) -> Application:
    """The bot: handlers, rate limiter, concurrency, and start-up / shutdown of its services.

    `models` are the model names the engine serves (tests serve the digit model alone).
    """
    if not settings.telegram_bot_token:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    base_url, base_file_url = api_urls(settings)
    builder = (
        Application.builder()
        .token(settings.telegram_bot_token)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .concurrent_updates(CONCURRENT_UPDATES)
        .request(bot_api_request())
        .get_updates_request(get_updates_request())
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
    )
    if settings.outgoing_messages_per_s > 0:
        builder = builder.rate_limiter(
            AIORateLimiter(overall_max_rate=settings.outgoing_messages_per_s, max_retries=3)
        )
    application = builder.build()
    application.bot_data["settings"] = settings
    application.bot_data["models"] = tuple(models)
    handlers.register(application)
    application.add_error_handler(on_error)
    return application


def api_urls(settings: Settings) -> tuple[str, str]:
    """The Bot API's base URL and its files' (python-telegram-bot appends the token to both)."""
    root = settings.telegram_api_url.rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


async def _post_init(application: Application) -> None:
    """Open the database and the image store, start the engine (loads and warms the models), and
    fail the retrain job a crash or a kill left behind while the bot was down."""
    settings: Settings = application.bot_data["settings"]
    found = application.bot_data[KEY] = await open_services(settings, application.bot_data["models"])
    await _recover_retrain_jobs(found)
    await _set_commands(application)
    logger.info("PhotoBot started as @%s", application.bot.username)


async def _post_shutdown(application: Application) -> None:
    """Close the engine and the database, after the last update in flight was handled."""
    retraining = application.bot_data.pop("retraining", None)
    if retraining is not None:  # stop watching job processes; the jobs themselves run on
        await retraining.close()
    found: Services | None = application.bot_data.pop(KEY, None)
    if found is not None:
        await close_services(found)
    logger.info("PhotoBot stopped")


async def open_services(settings: Settings, models: Sequence[str] = MODEL_NAMES) -> Services:
    from photobot.serving import build_classifier
    from storage import Store

    store = await Store.open(settings.database_path, settings.images_dir)
    classifier = build_classifier(settings, names=models)
    try:
        await classifier.start()
    except BaseException:
        await store.close()
        raise
    found = Services(
        settings=settings,
        classifier=classifier,
        store=store,
        images=store.images,
        model_store=classifier.store,
        limiter=FloodLimiter(settings.user_photos_per_minute),
    )
    found.label_sets = {name: labels for name, labels in found.label_sets.items() if name in models}
    found.refresh_labels()
    return found


async def close_services(found: Services) -> None:
    try:
        await found.classifier.close()
    finally:
        await found.store.close()  # closes the image store too


async def _recover_retrain_jobs(found: Services) -> None:
    """A job still queued or running whose process is gone would answer every /retrain "already
    running" for ever: mark it failed. (No job runs under this bot yet, so none is kept.)"""
    for job_id in await found.store.fail_abandoned_jobs():
        logger.warning("retrain job %d was left without a process: marked failed", job_id)


async def _set_commands(application: Application) -> None:
    for language, commands in COMMANDS.items():
        await application.bot.set_my_commands(
            [BotCommand(name, description) for name, description in commands],
            language_code=None if language == "en" else language,
        )
