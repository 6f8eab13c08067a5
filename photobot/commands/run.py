"""`photobot run`: start the bot — long polling by default, a webhook when WEBHOOK_URL is set.

SIGTERM and SIGINT stop it cleanly: no new updates are taken, the photos in flight are answered, then
the engine and the database are closed (python-telegram-bot's `run_polling` / `run_webhook` own the
event loop and the signal handlers; `bot.app` does the rest in `post_shutdown`).

The token never reaches the terminal or the logs: a filter on the log handlers redacts it
(`bot.redaction`), and it is checked with one getMe before anything starts, so a token Telegram rejects
or a Bot API that cannot be reached is one clear line and a non-zero exit, not python-telegram-bot's
traceback, which quotes the token.

A Bot API that cannot be reached at start (the network not up yet, a proxy needed) is asked again with
exponential backoff, 1, 2, 4 … 60 s apart, one log line per try, `--max-retries` times (default 10,
about five minutes); then the process exits non-zero with one line that says what to check, proxy
included (HTTPS_PROXY is honoured, see `bot.transport`). A rejected token is never retried.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from photobot.commands import non_negative_int
from photobot.errors import UserFacingError
from photobot.settings import Settings

if TYPE_CHECKING:
    from telegram.ext import Application

NO_TOKEN = (
    "TELEGRAM_BOT_TOKEN is not set. Create a bot: open Telegram, talk to @BotFather, send /newbot, "
    "and put the token it gives you in .env (see .env.example) as TELEGRAM_BOT_TOKEN=..."
)
TOKEN_REJECTED = "Telegram rejected the bot token (check TELEGRAM_BOT_TOKEN)"
PROXY_HINT = "behind a proxy, set HTTPS_PROXY (for example HTTPS_PROXY=http://proxy.example:3128)"
POLL_TIMEOUT_S = 10
MAX_RETRIES = 10  # 1 + 2 + 4 + … + 60 s: about five minutes for the network to come up
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0

log = logging.getLogger(__name__)


class BotApiUnreachable(UserFacingError):
    """The Bot API could not be reached (the network, a proxy, TELEGRAM_API_URL): worth trying again."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="root of the Bot API server (default: TELEGRAM_API_URL)")
    parser.add_argument(
        "--playground-without-token",
        action="store_true",
        help="with no TELEGRAM_BOT_TOKEN, start the offline playground instead (what `make run` does)",
    )
    parser.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=MAX_RETRIES,
        metavar="N",
        help=f"tries again to reach the Bot API at start, 1, 2, 4 … {MAX_DELAY_S:.0f} s apart "
        f"(default {MAX_RETRIES}; 0: give up at once)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from bot import redaction
    from photobot.serving import use_serving_threads

    redaction.install([settings.telegram_bot_token or ""])
    # The token lives in `settings` from here on: the decode processes and any other child started
    # later inherit the environment, and none of them talks to Telegram.
    os.environ.pop("TELEGRAM_BOT_TOKEN", None)
    use_serving_threads(in_bot=True)  # before anything starts TensorFlow
    if args.api_url:
        settings = dataclasses.replace(settings, telegram_api_url=args.api_url.rstrip("/"))
    if not settings.telegram_bot_token and args.playground_without_token:
        print(f"{NO_TOKEN}\nMeanwhile, here is the bot in the offline playground.", flush=True)
        from photobot.commands import playground

        return playground.main(argparse.Namespace(port=playground.DEFAULT_PORT), settings)
    if not settings.telegram_bot_token:
        raise UserFacingError(NO_TOKEN)
    from photobot.wiring import build_bot, check_database

    check_database(settings)  # a database that cannot be reached is one line, before anything starts
    asyncio.run(wait_for_bot_api(settings, max_retries=args.max_retries))
    application = build_bot(settings)
    with _one_line_errors(settings):
        _serve(application, settings)
    return 0


def _serve(application: Application, settings: Settings) -> None:
    """Long polling, or a webhook when WEBHOOK_URL is set, until SIGTERM or SIGINT.

    The webhook is our own server (`bot.webhook`), not python-telegram-bot's `run_webhook`, which
    acknowledges an update before it is answered: here Telegram's call is answered once the update is,
    so the update of a replica that dies is delivered again, and each is answered once across replicas.
    """
    from telegram import Update

    if settings.webhook_url:
        from bot.webhook import run_webhook
        from photobot.wiring import webhook_config

        asyncio.run(run_webhook(application, webhook_config(settings)))
    else:
        application.run_polling(
            timeout=POLL_TIMEOUT_S, allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY]
        )


async def wait_for_bot_api(settings: Settings, *, max_retries: int) -> None:
    """`check_bot_api`, tried again with exponential backoff while the Bot API cannot be reached."""
    for attempt, delay in enumerate([*backoff_delays(max_retries), None], start=1):
        try:
            await check_bot_api(settings)
            return
        except BotApiUnreachable as error:
            if delay is None:
                raise
            log.warning("%s; try %d of %d, next in %g s", error, attempt, max_retries + 1, delay)
            await asyncio.sleep(delay)


def backoff_delays(retries: int, first_s: float = FIRST_DELAY_S, most_s: float = MAX_DELAY_S) -> list[float]:
    """The waits before each retry: doubling from `first_s`, never more than `most_s`."""
    return [min(most_s, first_s * 2**n) for n in range(retries)]


async def check_bot_api(settings: Settings) -> None:
    """Ask the Bot API who the bot is, once, before the engine and the models start."""
    from telegram import Bot

    from bot.app import api_urls
    from bot.transport import bot_api_request

    base_url, base_file_url = api_urls(settings.telegram_api_url)
    bot = Bot(
        settings.telegram_bot_token or "",
        base_url=base_url,
        base_file_url=base_file_url,
        request=bot_api_request(1, settings.bot_api_timeouts),
        get_updates_request=bot_api_request(1, settings.bot_api_timeouts),
    )
    with _one_line_errors(settings):
        async with bot:  # initialize() calls getMe; leaving closes the connections
            pass


@contextlib.contextmanager
def _one_line_errors(settings: Settings) -> Iterator[None]:
    """A rejected token or an unreachable Bot API as a `UserFacingError`, without the token.

    python-telegram-bot's InvalidToken quotes the token ("The token `…` was rejected"): its text and
    its chain are dropped here (`from None`).
    """
    from telegram.error import InvalidToken, NetworkError

    from bot.redaction import redact

    try:
        yield
    except InvalidToken:
        raise UserFacingError(TOKEN_REJECTED) from None
    except NetworkError as error:  # TimedOut too; the transport's texts hold no token, redact anyway
        reason = redact(str(error), [settings.telegram_bot_token or ""])
        raise BotApiUnreachable(
            f"the Bot API at {settings.telegram_api_url} could not be reached ({reason}); "
            f"check the network and TELEGRAM_API_URL; {PROXY_HINT}"
        ) from None
