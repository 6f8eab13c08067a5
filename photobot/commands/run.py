"""`photobot run`: start the bot — long polling by default, a webhook when WEBHOOK_URL is set.

SIGTERM and SIGINT stop it cleanly: no new updates are taken, the photos in flight are answered, then
the engine and the database are closed (python-telegram-bot's `run_polling` / `run_webhook` own the
event loop and the signal handlers; `bot.app` does the rest in `post_shutdown`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib

from photobot.errors import UserFacingError
from photobot.settings import Settings

NO_TOKEN = (
    "TELEGRAM_BOT_TOKEN is not set. Create a bot: open Telegram, talk to @BotFather, send /newbot, "
    "and put the token it gives you in .env (see .env.example) as TELEGRAM_BOT_TOKEN=..."
)
POLL_TIMEOUT_S = 10


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="root of the Bot API server (default: TELEGRAM_API_URL)")
    parser.add_argument(
        "--playground-without-token",
        action="store_true",
        help="with no TELEGRAM_BOT_TOKEN, start the offline playground instead (what `make run` does)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from photobot.serving import use_serving_threads

    use_serving_threads(in_bot=True)  # before anything starts TensorFlow
    if args.api_url:
        settings = dataclasses.replace(settings, telegram_api_url=args.api_url.rstrip("/"))
    if not settings.telegram_bot_token and args.playground_without_token:
        print(f"{NO_TOKEN}\nMeanwhile, here is the bot in the offline playground.", flush=True)
        from photobot.commands import playground

        return playground.main(argparse.Namespace(port=playground.DEFAULT_PORT), settings)
    if not settings.telegram_bot_token:
        raise UserFacingError(NO_TOKEN)
    from telegram import Update

    from bot.app import build_application

    application = build_application(settings)
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
    return 0


def _webhook_secrets(token: str) -> tuple[str, str]:
    """A URL path and a secret header value derived from the token: unguessable, stable across restarts."""
    digest = hashlib.sha256(f"photobot-webhook:{token}".encode()).hexdigest()
    return f"telegram/{digest[:32]}", digest[32:]
