"""`photobot playground`: try the whole bot in a browser, offline, with no Telegram account.

Starts, on 127.0.0.1 only, a local Bot API server, the real bot pointed at it, and a Telegram-like web
page (http://127.0.0.1:8080 by default) where two people — an ordinary user and an admin — can send
photos, captions and commands and press the bot's buttons. Ctrl-C stops everything cleanly.

It uses DATA_DIR (`var/` by default) like the bot does: a local, single-user tool. Other machines cannot
reach it, and other web sites open in the same browser cannot use it: the server checks Host and Origin
and wants the session token of the page it served on every call (`bot.playground.web`).
"""

from __future__ import annotations

import argparse

from photobot.settings import Settings

DEFAULT_PORT = 8080


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from bot.playground.web import serve
    from photobot.wiring import playground_bot

    asyncio.run(
        serve(
            playground_bot(settings),
            data_dir=settings.data_dir,
            port=args.port,
            on_ready=lambda line: print(line, flush=True),
        )
    )
    return 0
