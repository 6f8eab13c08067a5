"""Three `photobot run` processes behind nginx on one PostgreSQL database, Telegram's retries in front:
people send photos and press buttons, one replica is killed (SIGKILL) while it holds an update, and every
update is still answered, at most once more than asked, and every tap stored.

Everything is real but Telegram: the fake Bot API server (`local_mode`: plain-HTTP webhooks) delivers
webhooks as Telegram does (one chat's updates in order, a failed or unanswered call delivered again),
nginx from the OS packages balances (`make nginx`), the replicas are the command line's processes, each
with its own DATA_DIR (a machine's caches), sharing DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from benchmarks.postgres_server import free_port
from bot.playground.bot_api_server import BotApiServer, Json
from tests.support.bot import TOKEN, buttons, digit_photo
from tests.support.nginx import Nginx
from tests.support.storage import rows

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]

REPLICAS = 3
USERS = [7101, 7102, 7103, 7104]
AFTER_KILL = 3  # photos each person sends once the replica is killed (and as many as it takes before)
SLOW_USER = 7199  # sends the photo whose download hangs: the replica that takes it is killed
LEASE_S = 3.0


async def wait_until(condition, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def start_replica(
    index: int, port: int, folder: Path, env: dict[str, str]
) -> asyncio.subprocess.Process:
    data = folder / f"replica-{index}"
    data.mkdir()
    log = open(folder / f"replica-{index}.log", "wb")  # noqa: SIM115 - the process holds it
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "photobot",
            "run",
            env={**env, "DATA_DIR": str(data), "WEBHOOK_PORT": str(port)},
            cwd=data,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


async def healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def bot_messages(telegram: BotApiServer, user: int) -> list[Json]:
    return [
        e["message"]
        for e in telegram.chat(user).events
        if e["type"] == "message" and e["message"]["from"]["is_bot"]
    ]


async def answer_to(telegram: BotApiServer, user: int, message: Json) -> Json:
    """The bot's answer quoting `message` (a photo), however long a takeover makes it wait."""
    event = await telegram.wait_for(
        user,
        lambda e: (
            e["type"] == "message"
            and e["message"]["from"]["is_bot"]
            and e["message"].get("reply_to_message", {}).get("message_id") == message["message_id"]
        ),
        timeout=240,
    )
    return event["message"]


async def person(telegram: BotApiServer, user: int, glyphs, killed: asyncio.Event) -> int:
    """/digit, then photos until a replica is killed and AFTER_KILL more, each answer rated with its first
    button (✅ Correct, or an unsure answer's guess) and the edit that says so awaited: the photos sent."""
    after = telegram.chat(user).revision
    await telegram.send_text(user, "/digit")
    await telegram.wait_for(
        user, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], after=after, timeout=240
    )
    sent = after_kill = 0
    while after_kill < AFTER_KILL:
        after_kill += killed.is_set()
        sent += 1
        photo = await telegram.send_photo(
            user, digit_photo(glyphs[(user + sent) % 10], seed=user * 100 + sent)
        )
        answer = await answer_to(telegram, user, photo)
        assert buttons(answer), answer["text"]
        after = telegram.chat(user).revision
        await telegram.press_button(user, answer["message_id"], buttons(answer)[0][1])
        await telegram.wait_for(
            user,
            lambda e, m=answer["message_id"]: e["type"] == "edit" and e["message"]["message_id"] == m,
            after=after,
            timeout=240,
        )
    return sent


async def test_replicas_behind_nginx_answer_every_update_once_when_one_is_killed(
    tmp_path: Path, postgres_url: str, glyphs
) -> None:
    ports = [free_port() for _ in range(REPLICAS)]
    async with BotApiServer(TOKEN, local_mode=True) as telegram:
        for user in [*USERS, SLOW_USER]:
            telegram.add_user(user)
        with Nginx.start(ports) as nginx:
            env = {
                **os.environ,
                "TELEGRAM_BOT_TOKEN": TOKEN,
                "TELEGRAM_API_URL": telegram.url,
                "DATABASE_URL": postgres_url,
                "WEBHOOK_URL": nginx.url,
                "WEBHOOK_LISTEN": "127.0.0.1",
                "WEBHOOK_LEASE_S": str(LEASE_S),
                "USER_PHOTOS_PER_MINUTE": "0",
                "USER_UPDATES_PER_MINUTE": "0",
                "OUTGOING_MESSAGES_PER_S": "0",
                "ENGINE_RUNTIME": "keras",  # no LiteRT conversions: three replicas share two cores
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
            replicas = [await start_replica(i, port, tmp_path, env) for i, port in enumerate(ports)]
            try:
                await run_and_kill(telegram, replicas, ports, postgres_url, glyphs)
            finally:
                for process in replicas:
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                for process in replicas:
                    try:
                        await asyncio.wait_for(process.wait(), 120)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
            logs = {i: (tmp_path / f"replica-{i}.log").read_text(errors="replace") for i in range(REPLICAS)}
            assert [p.returncode for p in replicas].count(-signal.SIGKILL) == 1
            assert all(p.returncode in (0, -signal.SIGKILL) for p in replicas), logs
            assert sum(log.count("webhook set: Telegram POSTs updates") for log in logs.values()) == 1, logs


async def run_and_kill(
    telegram: BotApiServer,
    replicas: list[asyncio.subprocess.Process],
    ports: list[int],
    database: str,
    glyphs,
) -> None:
    async def all_up() -> bool:
        return bool(telegram.webhook_url) and all([await healthy(port) for port in ports])

    await wait_until(all_up, 600, "every replica to load its models and the webhook to be set")
    killed = asyncio.Event()
    people = [asyncio.create_task(person(telegram, user, glyphs, killed)) for user in USERS]
    await wait_until(
        lambda: _true(all(len(bot_messages(telegram, u)) >= 2 for u in USERS)), 300, "everyone's first answer"
    )

    # A photo whose download hangs: whichever replica takes it holds it unanswered until it is killed.
    after = telegram.chat(SLOW_USER).revision
    await telegram.send_text(SLOW_USER, "/digit")
    await telegram.wait_for(
        SLOW_USER,
        lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"],
        after=after,
        timeout=240,
    )
    slow = await telegram.send_photo(SLOW_USER, digit_photo(glyphs[3], seed=1))
    hanging = [telegram.files[size["file_id"]].file_path for size in slow["photo"]]
    for path in hanging:
        telegram.file_delays[path] = 3600.0
    update_id = next(
        u["update_id"]
        for u in telegram.pending_updates
        if u.get("message", {}).get("message_id") == slow["message_id"]
        and u["message"]["chat"]["id"] == SLOW_USER
    )

    async def claimed() -> bool:
        return bool(rows(database, "SELECT owner FROM webhook_updates WHERE update_id = ?", (update_id,)))

    await wait_until(claimed, 120, "a replica to claim the hanging photo")
    owner = rows(database, "SELECT owner FROM webhook_updates WHERE update_id = ?", (update_id,))[0][0]
    victim = next(p for p in replicas if f"/{p.pid}/" in owner)
    victim.kill()  # SIGKILL: no shutdown, its connections reset mid-call
    await victim.wait()
    killed.set()
    for path in hanging:
        telegram.file_delays.pop(path)

    slow_answer = await answer_to(telegram, SLOW_USER, slow)  # taken over after its lease ran out
    assert buttons(slow_answer), slow_answer["text"]
    photos_each = await asyncio.gather(*people)

    # Every update answered (each photo has its answer above; nothing left for Telegram to deliver),
    # at most one answer more than asked (one replica killed), every tap stored.
    await wait_until(
        lambda: _true(not telegram.pending_updates), 120, "Telegram to have delivered everything"
    )
    photos = sum(photos_each) + 1
    asked = len(USERS) + photos + 1  # /digit and each photo, for every person and the slow one
    sent = sum(len(bot_messages(telegram, u)) for u in [*USERS, SLOW_USER])
    duplicates = sent - asked
    assert 0 <= duplicates <= 1
    assert rows(database, "SELECT count(*) FROM predictions") == [(photos,)]  # a photo handled twice: one row
    assert rows(database, "SELECT count(*) FROM feedback") == [(sum(photos_each),)]  # every tap
    updates = len(USERS) + 2 * sum(photos_each) + 2  # /digit, photos and taps; the slow user's two
    done, taken_over, in_doubt = rows(
        database,
        """SELECT sum(CASE WHEN done_at IS NULL THEN 0 ELSE 1 END),
                  sum(CASE WHEN claims > 1 THEN 1 ELSE 0 END), sum(in_doubt) FROM webhook_updates""",
    )[0]
    assert done == updates
    assert taken_over >= 1  # the hanging photo, at least
    assert in_doubt >= duplicates  # every answer that may have gone out twice is counted
    slow_row = rows(
        database, "SELECT claims, in_doubt FROM webhook_updates WHERE update_id = ?", (update_id,)
    )
    assert slow_row == [(2, 0)]  # taken over once; nothing had gone out for it
    tries = [d.outcome for d in telegram.webhook_deliveries if d.update_id == update_id]
    assert tries[-1] == "ok" and len(tries) >= 2  # the killed replica's call failed; Telegram tried again


async def _true(value: bool) -> bool:
    return value
