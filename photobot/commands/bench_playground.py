"""`photobot bench playground`: seconds from starting the playground on a fresh checkout to an answered photo.

It runs `photobot playground` (what `make run` starts when no token is set, once the virtual
environment exists) in an empty folder — no database, no model store, so the shipped models are seeded
as on a fresh clone — then, through the page's own API: the page answers, the bot is ready, a digit
photo is answered with buttons.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8089, help="playground port on 127.0.0.1 (default 8089)")
    parser.add_argument(
        "--checkout",
        type=Path,
        help="run `make run` in this fresh clone (its .venv already built) instead; it serves on port 8080",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from photobot.commands.bench_bot_photos import digit_photos

    photo = digit_photos(1, settings)[0]
    with tempfile.TemporaryDirectory(prefix="photobot-fresh-") as folder:
        if args.checkout:
            command, cwd, port = ["make", "run"], args.checkout.resolve(), 8080
        else:
            command, cwd, port = (
                [sys.executable, "-m", "photobot", "playground", "--port", str(args.port)],
                Path(folder),
                args.port,
            )
        times = asyncio.run(_measure(command, cwd, port, photo))
    print(f"page answers:        {times['page']:6.1f} s")
    print(f"bot ready:           {times['ready']:6.1f} s")
    print(f"first photo answered: {times['answer']:5.1f} s  (the photo itself took {times['photo']:.2f} s)")
    return 0


async def _measure(command: list[str], cwd: Path, port: int, photo: bytes) -> dict[str, float]:
    import aiohttp

    from bot.playground.web import TOKEN_HEADER

    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "DATA_DIR")}
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    log = open(cwd / "playground.log", "wb")  # noqa: SIM115 - the child owns it from here
    # A new session: Ctrl-C's SIGINT goes to `make` and the bot it started alike.
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    times: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(url) as http:
            http.headers[TOKEN_HEADER] = await _page_token(http, process)  # what the page sends
            times["page"] = time.monotonic() - started
            state = await _poll_state(http, process, lambda s: True)
            user = state["people"][0]["id"]
            await _poll_state(http, process, lambda s: s["ready"])
            times["ready"] = time.monotonic() - started
            sent = time.monotonic()
            form = aiohttp.FormData({"user": str(user), "text": ""})
            form.add_field("file", photo, filename="digit.jpg", content_type="image/jpeg")
            async with http.post("/api/send", data=form) as response:
                response.raise_for_status()
            await _wait_answer(http, user)
            times["answer"] = time.monotonic() - started
            times["photo"] = time.monotonic() - sent
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGINT)
            await asyncio.wait_for(process.wait(), 60)
    return times


async def _poll_state(http, process, condition) -> dict:
    async def state() -> dict | None:
        async with http.get("/api/state") as response:
            found = await response.json()
            return found if condition(found) else None

    return await _poll(process, state)


async def _page_token(http, process) -> str:
    """The page's session token, once the page answers: the playground's API wants it on every call."""
    from bot.playground.web import token_in_page

    async def token() -> str | None:
        async with http.get("/") as response:
            return token_in_page(await response.text()) if response.status == 200 else None

    return await _poll(process, token)


async def _poll(process, attempt):
    import aiohttp

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise UserFacingError("the playground exited early")
        try:
            found = await attempt()
            if found is not None:
                return found
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise UserFacingError("the playground did not start within 10 minutes")


async def _wait_answer(http, user: int) -> None:
    after = 0
    while True:
        async with http.get("/api/events", params={"user": str(user), "after": str(after)}) as response:
            events = (await response.json())["events"]
        for event in events:
            after = max(after, event["rev"])
            message = event.get("message") or {}
            if (
                event["type"] == "message"
                and message.get("from", {}).get("is_bot")
                and message.get("reply_markup")
            ):
                return
