"""`photobot run`: start the bot."""

from __future__ import annotations

import argparse

from photobot.errors import UserFacingError
from photobot.settings import Settings

NO_TOKEN = (
    "TELEGRAM_BOT_TOKEN is not set. Create a bot: open Telegram, talk to @BotFather, send /newbot, "
    "and put the token it gives you in .env (see .env.example) as TELEGRAM_BOT_TOKEN=..."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="root of the Bot API server (default: TELEGRAM_API_URL)")


def main(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.telegram_bot_token:
        raise UserFacingError(NO_TOKEN)
    raise UserFacingError("the Telegram front-end is not built yet in this version")
