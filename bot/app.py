"""The bot's application: `build_application(config, open_services=…)` returns it, ready to run.

The composition root (`photobot.wiring`) builds the parts and hands them in: this module wires
python-telegram-bot to them. Nothing heavy happens here or at import time: the services (the engine,
the models, the database) are opened in `post_init`, when the application starts, and closed in
`post_shutdown`, after the last update in flight has been answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from telegram import BotCommand
from telegram.ext import AIORateLimiter, Application, Defaults

from bot import handlers, retraining
from bot.config import BotConfig
from bot.errors import on_error
from bot.retrain_workers import expire as expire_worker_jobs
from bot.services import KEY, Services
from bot.texts import COMMANDS
from bot.transport import bot_api_request, get_updates_request
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue

logger = logging.getLogger(__name__)

CONCURRENT_UPDATES = 256  # photos handled at once; the engine's own queue bounds the real work
OPEN_SERVICES_KEY = "open_services"
OPENING_KEY = "opening"  # the start-up task, while it runs

ServicesFactory = Callable[[], Awaitable[Services]]


def build_application(
    config: BotConfig,
    *,
    open_services: ServicesFactory,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> Application:
    """The bot: handlers, rate limiter, concurrency, and start-up / shutdown of its services.

    `open_services` opens what the handlers use (called once, in `post_init`); `catalogue` names the
    models whose chat modes get a command.
    """
    if not config.token:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    base_url, base_file_url = api_urls(config.api_url)
    builder = (
        Application.builder()
        .token(config.token)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .concurrent_updates(CONCURRENT_UPDATES)
        # A reply quotes the person's photo; one they deleted meanwhile must not cost them the answer.
        .defaults(Defaults(allow_sending_without_reply=True))
        .request(bot_api_request(timeouts=config.api_timeouts))
        .get_updates_request(get_updates_request(config.api_timeouts))
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
    )
    # One expression: the rate limiter changes the builder's type (its bot's rate-limit arguments).
    application: Application = (
        builder.rate_limiter(
            AIORateLimiter(overall_max_rate=config.outgoing_messages_per_s, max_retries=3)
        ).build()
        if config.outgoing_messages_per_s > 0
        else builder.build()
    )
    application.bot_data["config"] = config
    application.bot_data["catalogue"] = catalogue
    application.bot_data[OPEN_SERVICES_KEY] = open_services
    handlers.register(application)
    application.add_error_handler(on_error)
    return application


async def start_polling(application: Application, *, timeout: int = 10) -> None:
    """`run_polling`'s start-up (initialize, post_init, start, poll) inside an event loop someone else
    owns: the playground's and the benchmarks' bot, beside their own Bot API server."""
    if application.updater is None:
        raise ValueError("this bot has no updater to poll with (built with .updater(None))")
    await application.initialize()
    if application.post_init is not None:
        await application.post_init(application)
    await application.start()
    await application.updater.start_polling(timeout=timeout, poll_interval=0)


async def stop_polling(application: Application) -> None:
    """What `start_polling` started, stopped in reverse, with `post_shutdown` closing the services."""
    if application.updater is not None and application.updater.running:
        await application.updater.stop()
    if application.running:
        await application.stop()
    await application.shutdown()
    if application.post_shutdown is not None:
        await application.post_shutdown(application)


def api_urls(api_url: str) -> tuple[str, str]:
    """The Bot API's base URL and its files' (python-telegram-bot appends the token to both)."""
    root = api_url.rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


async def _post_init(application: Application) -> None:
    """Open the services (database, image store, the engine with its models loaded and warmed), fail
    the retrain job a crash or a kill left behind while the bot was down, and take over the one a
    stopped bot process on this machine left running.

    In a task of its own that `_post_shutdown` cancels if it is still running: `run_polling` answers a
    SIGTERM during start-up by leaving `post_init` pending and shutting down, and services half-opened
    then would never be closed (the database's threads would keep the process from exiting).
    """
    opening = asyncio.create_task(_open(application), name="photobot-post-init")
    application.bot_data[OPENING_KEY] = opening
    try:
        await opening
    finally:
        application.bot_data.pop(OPENING_KEY, None)


async def _open(application: Application) -> None:
    open_services: ServicesFactory = application.bot_data.pop(OPEN_SERVICES_KEY)
    found = application.bot_data[KEY] = await open_services()
    await _recover_retrain_jobs(found)
    await expire_worker_jobs(found.store, application.bot, found.model_store)  # a dead worker's, if any
    await retraining.adopt(application.bot_data, found, application.bot)
    await _set_commands(application)
    logger.info("PhotoBot started as @%s", application.bot.username)


async def _post_shutdown(application: Application) -> None:
    """Close the engine and the database, after the last update in flight was handled."""
    opening: asyncio.Task[None] | None = application.bot_data.pop(OPENING_KEY, None)
    if opening is not None and not opening.done():  # stopped while starting: what it opened closes
        opening.cancel()
        await asyncio.wait([opening])
    retraining = application.bot_data.pop("retraining", None)
    if retraining is not None:  # stop watching job processes; the jobs themselves run on
        await retraining.close()
    found: Services | None = application.bot_data.pop(KEY, None)
    if found is not None:
        await close_services(found)
    logger.info("PhotoBot stopped")


async def close_services(found: Services) -> None:
    try:
        for close in found.closing:
            await close()
        if found.features is not None:
            await found.features.close()  # the photos in hand are read before the store closes
        await found.classifier.close()
    finally:
        await found.store.close()  # closes the image store too


async def _recover_retrain_jobs(found: Services) -> None:
    """A job still queued or running whose process is gone would answer every /retrain "already
    running" for ever: mark it failed. (No job runs under this bot yet; one another bot process
    watches is left alone.)"""
    for job_id in await found.store.fail_abandoned_jobs():
        logger.warning("retrain job %d was left without a process: marked failed", job_id)


async def _set_commands(application: Application) -> None:
    for language, commands in COMMANDS.items():
        await application.bot.set_my_commands(
            [BotCommand(name, description) for name, description in commands],
            language_code=None if language == "en" else language,
        )
