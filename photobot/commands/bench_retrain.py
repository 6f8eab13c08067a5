"""`photobot bench retrain`: the retraining figures (see `benchmarks.retrain`).

By default the serving versions of this data dir's store are the starting point: a fresh data dir
under --out gets copies of them, so the store itself is never changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("var/bench-retrain"), help="a fresh folder (replaced)"
    )
    parser.add_argument("--base-model", type=Path, help="digits version dir (default: the serving one)")
    parser.add_argument("--flowers-model", type=Path, help="flowers version dir (default: the serving one)")
    parser.add_argument("--no-flowers", action="store_true", help="skip the flowers retrain")
    parser.add_argument("--photos", type=int, default=100, help="labelled photos of the new style")
    parser.add_argument("--eval", type=int, default=200, help="more photos of that style, for measuring")
    parser.add_argument("--poison", type=int, default=100, help="photos with wrong labels from one user")
    parser.add_argument(
        "--through-bot",
        action="store_true",
        help="label the photos through the real bot and a local Bot API server (buttons), not storage's API",
    )
    parser.add_argument("--job-args", nargs=argparse.REMAINDER, default=[], help="passed to photobot retrain")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks import retrain as retrain_demo
    from photobot.serving import model_store

    store = model_store(settings)
    base = args.base_model or _serving(store, "digits")
    if base is None:
        raise UserFacingError(f"no digits version serves in {settings.models_dir}; give --base-model")
    argv = ["--out", str(args.out), "--base-model", str(base)]
    argv += ["--photos", str(args.photos), "--eval", str(args.eval), "--poison", str(args.poison)]
    flowers = None if args.no_flowers else (args.flowers_model or _serving(store, "flowers"))
    if flowers is not None:
        argv += ["--flowers-model", str(flowers)]
        cache = settings.data_dir / "cache" / "bottlenecks"
        if cache.is_dir():
            argv += ["--bottleneck-cache", str(cache)]
    if settings.datasets:
        argv += ["--datasets", *map(str, settings.datasets)]
    argv = [*argv, "--job-args", *args.job_args] if args.job_args else argv
    if args.through_bot:
        return retrain_demo.main(argv, feed_through_bot, THROUGH_BOT)
    return retrain_demo.main(argv)


def _serving(store, name: str) -> Path | None:
    version = store.active(name)
    return version.path if version is not None else None


TOKEN = "5555:bench-retrain"
THROUGH_BOT = "the real bot over a local Bot API server: photo, then ✅ or ❌ + the right digit"


def feed_through_bot(settings: Settings, photos, model: str, user_id: int, answers) -> None:
    """Each photo is sent to the real bot; the person taps ✅, or ❌ and then the right label."""
    import asyncio

    asyncio.run(_feed_through_bot(settings, photos, user_id))


async def _feed_through_bot(settings: Settings, photos, user_id: int) -> None:
    import functools
    from dataclasses import replace

    from bot.app import start_polling, stop_polling
    from bot.playground.bot_api_server import BotApiServer
    from bot.services import KEY
    from photobot.wiring import build_bot

    server = BotApiServer(TOKEN)
    await server.start()
    bot_settings = replace(
        settings,
        telegram_bot_token=TOKEN,
        telegram_api_url=server.url,
        user_photos_per_minute=0,
        user_updates_per_minute=0,
        outgoing_messages_per_s=0,
    )
    application = build_bot(bot_settings, names=("digits",))
    await start_polling(application, timeout=1)
    server.add_user(user_id, f"User {user_id}")
    store = application.bot_data[KEY].store
    try:
        for data, label in photos:
            reply = await _next(server, user_id, functools.partial(server.send_photo, user_id, data))
            prediction = (await store.user_predictions(user_id, limit=1))[0]
            if prediction.label == label:
                await _press(server, user_id, reply, f"v:{prediction.id}:y")
                continue
            await _press(server, user_id, reply, f"v:{prediction.id}:n")
            await _press(
                server,
                user_id,
                server.chat(user_id).messages[reply["message_id"]],
                f"l:{prediction.id}:{label}",
            )
    finally:
        await stop_polling(application)
        await server.stop()


def _bot_message(event: dict) -> bool:
    return event["type"] == "message" and event["message"]["from"]["is_bot"]


async def _next(server, user_id: int, action) -> dict:
    after = server.chat(user_id).revision
    await action()
    return (await server.wait_for(user_id, _bot_message, after=after, timeout=60))["message"]


async def _press(server, user_id: int, message: dict, data: str) -> None:
    after = server.chat(user_id).revision
    await server.press_button(user_id, message["message_id"], data)
    await server.wait_for(user_id, lambda e: e["type"] == "edit", after=after, timeout=60)
