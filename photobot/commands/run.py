"""`photobot run`: start the bot — long polling by default, a webhook when WEBHOOK_URL is set.

SIGTERM and SIGINT stop it cleanly: no new updates are taken, the photos in flight are answered, then
the engine and the database are closed (python-telegram-bot's `run_polling` / `run_webhook` own the
event loop and the signal handlers; `bot.app` does the rest in `post_shutdown`).

The token never reaches the terminal or the logs: a filter on the log handlers redacts it
(`bot.redaction`), and it is checked with one getMe before anything starts, so a token Telegram rejects
or a Bot API that cannot be reached is one clear line and a non-zero exit, not python-telegram-bot's
traceback, which quotes the token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from photobot.errors import UserFacingError
from photobot.settings import Settings

if TYPE_CHECKING:
    from telegram.ext import Application

NO_TOKEN = (
    "TELEGRAM_BOT_TOKEN is not set. Create a bot: open Telegram, talk to @BotFather, send /newbot, "
    "and put the token it gives you in .env (see .env.example) as TELEGRAM_BOT_TOKEN=..."
)
TOKEN_REJECTED = "Telegram rejected the bot token (check TELEGRAM_BOT_TOKEN)"
POLL_TIMEOUT_S = 10


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="root of the Bot API server (default: TELEGRAM_API_URL)")
    parser.add_argument(
        "--playground-without-token",
        action="store_true",
        help="with no TELEGRAM_BOT_TOKEN, start the offline playground instead (what `make run` does)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from bot import redaction
    from photobot.serving import use_serving_threads

    redaction.install([settings.telegram_bot_token or ""])
    use_serving_threads(in_bot=True)  # before anything starts TensorFlow
    if args.api_url:
        settings = dataclasses.replace(settings, telegram_api_url=args.api_url.rstrip("/"))
    if not settings.telegram_bot_token and args.playground_without_token:
        print(f"{NO_TOKEN}\nMeanwhile, here is the bot in the offline playground.", flush=True)
        from photobot.commands import playground

        return playground.main(argparse.Namespace(port=playground.DEFAULT_PORT), settings)
    if not settings.telegram_bot_token:
        raise UserFacingError(NO_TOKEN)
    from photobot.wiring import build_bot

    asyncio.run(check_bot_api(settings))
    application = build_bot(settings)
    with _one_line_errors(settings):
        _serve(application, settings)
    return 0


def _serve(application: Application, settings: Settings) -> None:
    """Long polling, or a webhook when WEBHOOK_URL is set, until SIGTERM or SIGINT."""
    from telegram import Update

    if settings.webhook_url:
        path, secret = _webhook_secrets(settings.telegram_bot_token)
        application.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=path,
            webhook_url=f"{settings.webhook_url.rstrip('/')}/{path}",
            secret_token=secret,
            allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY],
        )
    else:
        application.run_polling(
            timeout=POLL_TIMEOUT_S, allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY]
        )


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
        request=bot_api_request(pool_size=1),
        get_updates_request=bot_api_request(pool_size=1),
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
        raise UserFacingError(
            f"the Bot API at {settings.telegram_api_url} could not be reached ({reason}); "
            "check TELEGRAM_API_URL and the network"
        ) from None


def _webhook_secrets(token: str) -> tuple[str, str]:
    """A URL path and a secret header value derived from the token: unguessable, stable across restarts."""
    digest = hashlib.sha256(f"photobot-webhook:{token}".encode()).hexdigest()
    return f"telegram/{digest[:32]}", digest[32:]
