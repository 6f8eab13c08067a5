"""`photobot bench scale`: the cluster of issue 21 on one machine, with a bot and an inference replica
killed mid-run.

Everything is the real thing but Telegram: a throwaway PostgreSQL (`benchmarks.postgres_server`),
`photobot serve inference` with N replicas of each model deployment (a local Ray cluster), M `photobot run`
processes on webhooks (each its own DATA_DIR, sharing DATABASE_URL and INFERENCE_URL) behind nginx
(`benchmarks.nginx_server`), and the playground's Bot API server delivering webhooks as Telegram does (a
failed or unanswered call delivered again, one chat's updates in order). Simulated people send photos of
handwritten digits from the MNIST test set, each rendered as a phone photo, and press the first button
under every answer. With `kill`, once a third of the photos are sent, one bot replica and one replica of the
digits model are SIGKILLed (the Ray actor's process, found by its process title).

What counts: every photo answered (`lost` 0), at most one answer more than asked per killed bot replica
(`duplicates`), and every tap stored (`feedback_stored` equal to `taps`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.nginx_server import Nginx
from benchmarks.postgres_server import PostgresServer, free_port

TOKEN = "424242:scale-benchmark-token"
FIRST_USER = 9100
MODEL = "digits"
RAY_REPLICA_TITLE = f"ServeReplica:photobot:model-{MODEL}"  # Ray's process title of a model replica
Json = dict[str, Any]


@dataclass(frozen=True)
class ScaleConfig:
    bot_replicas: int = 3
    inference_replicas: int = 2
    users: int = 20
    photos: int = 200
    kill: bool = False
    datasets: tuple[Path, ...] = ()
    start_timeout_s: float = 600.0
    answer_timeout_s: float = 240.0  # a takeover waits for the killed replica's lease and Telegram's retry


@dataclass
class Tally:
    sent: int = 0
    taps: int = 0
    without_buttons: int = 0  # answers with nothing to tap: "took too long", inference down
    latencies_ms: list[float] = field(default_factory=list)
    photo_messages: dict[int, list[int]] = field(default_factory=dict)  # user → photo message ids
    killed: list[str] = field(default_factory=list)


def digit_photos(datasets: tuple[Path, ...], data_dir: Path, count: int) -> list[bytes]:
    """`count` phone-like JPEGs of handwritten digits from the MNIST test set (dark ink on uneven paper)."""
    from PIL import Image, ImageFilter

    from training.datasets import load_mnist

    _, _, x_test, _ = load_mnist(list(datasets), data_dir)
    photos = []
    rng = np.random.default_rng(21)
    for index in range(min(count, 500)):  # the rest repeat: the bot hashes photos, a repeat is a new one
        side, width, height = 240, 640, 480
        ink = Image.fromarray(x_test[index]).resize((side, side), Image.Resampling.BICUBIC)
        paper = np.full((height, width), 225.0) + np.linspace(-12, 12, width)[None, :]
        x0, y0 = (width - side) // 2, (height - side) // 2
        patch = np.asarray(ink, dtype=np.float64) / 255.0
        paper[y0 : y0 + side, x0 : x0 + side] *= 1 - 0.8 * patch
        paper += rng.normal(0, 3, paper.shape)
        gray = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
        buffer = io.BytesIO()
        Image.merge("RGB", (gray, gray, gray)).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def say(text: str) -> None:
    print(text, flush=True)


async def run_scale(config: ScaleConfig, work: Path) -> Json:
    """Start everything in `work`, run the load (and the kills), stop everything: the result's fields."""
    from bot.playground.bot_api_server import BotApiServer

    photos = digit_photos(config.datasets, work, config.photos)
    with PostgresServer.start() as postgres:
        database = postgres.create_database()
        async with BotApiServer(TOKEN, local_mode=True) as telegram:
            users = [FIRST_USER + i for i in range(config.users)]
            for user in users:
                telegram.add_user(user)
            ports = [free_port() for _ in range(config.bot_replicas)]
            with Nginx.start(ports) as nginx:
                env = _environment(telegram.url, database, nginx.url)
                processes: list[asyncio.subprocess.Process] = []
                try:
                    inference_url = await _start_inference(config, work, env, processes)
                    env["INFERENCE_URL"] = inference_url
                    bots = [
                        await _start(work, f"bot-{i}", ["run"], {**env, "WEBHOOK_PORT": str(port)})
                        for i, port in enumerate(ports)
                    ]
                    processes += bots
                    await _wait(
                        lambda: _all_up(telegram, ports), config.start_timeout_s, "the bots and the webhook"
                    )
                    say(f"{config.bot_replicas} bot replicas up behind {nginx.url}; {config.users} people")
                    started = time.monotonic()
                    tally = await _load(config, telegram, users, photos, bots)
                    await _wait(
                        lambda: _true(not telegram.pending_updates), 120, "every update to be delivered"
                    )
                    seconds = time.monotonic() - started
                finally:
                    await _stop(processes)
                return _result(config, telegram, users, tally, seconds, database)


def _environment(telegram_url: str, database: str, webhook_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": telegram_url,
        "DATABASE_URL": database,
        "WEBHOOK_URL": webhook_url,
        "WEBHOOK_LISTEN": "127.0.0.1",
        "WEBHOOK_LEASE_S": "5",
        # The bot's own limits would measure Telegram's rules, not the cluster (docs/performance.md).
        "USER_PHOTOS_PER_MINUTE": "0",
        "USER_UPDATES_PER_MINUTE": "0",
        "OUTGOING_MESSAGES_PER_S": "0",
        "ENGINE_RUNTIME": "keras",  # no LiteRT conversions: every process shares the same cores
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }


async def _start(work: Path, name: str, args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    data = work / name
    data.mkdir()
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - the process holds it
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "photobot",
            *args,
            env={**env, "DATA_DIR": str(data)},
            cwd=data,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its Ray cluster with it, stopped as one group
        )
    finally:
        log.close()


async def _start_inference(
    config: ScaleConfig, work: Path, env: dict[str, str], processes: list[asyncio.subprocess.Process]
) -> str:
    """`photobot serve inference` with `inference_replicas` replicas of every deployment, each asking a
    small share of a CPU so that all fit the local cluster; its URL once it says it serves."""
    port = free_port()
    serve_env = {
        **env,
        "SERVE_PORT": str(port),
        "SERVE_MIN_REPLICAS": str(config.inference_replicas),
        "SERVE_MAX_REPLICAS": str(config.inference_replicas),
        "SERVE_CPUS_PER_REPLICA": "0.1",
    }
    processes.append(await _start(work, "inference", ["serve", "inference"], serve_env))
    log = work / "inference.log"

    async def serving() -> bool:
        if processes[0].returncode is not None:
            raise RuntimeError(f"photobot serve inference stopped: {log.read_text(errors='replace')[-2000:]}")
        return "INFERENCE_URL=" in log.read_text(errors="replace")

    await _wait(serving, config.start_timeout_s, "Ray Serve")
    say(f"Ray Serve up: {config.inference_replicas} replicas per deployment on port {port}")
    return f"http://127.0.0.1:{port}"


async def _load(
    config: ScaleConfig,
    telegram: Any,
    users: list[int],
    photos: list[bytes],
    bots: list[asyncio.subprocess.Process],
) -> Tally:
    """People in a closed loop: /digit, then photos until `photos` are sent, each answer's first button
    pressed and its edit awaited. With `kill`, the kills once a third of the photos are sent."""
    tally = Tally()
    kill_at = config.photos // 3 if config.kill else -1

    async def person(user: int) -> None:
        after = telegram.chat(user).revision
        await telegram.send_text(user, "/digit")
        await telegram.wait_for(user, _from_bot, after=after, timeout=config.answer_timeout_s)
        while tally.sent < config.photos:
            tally.sent += 1
            if tally.sent == kill_at:
                _kill(bots[0], tally)
            sent_at, before = time.monotonic(), telegram.chat(user).revision
            photo = await telegram.send_photo(user, photos[tally.sent % len(photos)])
            tally.photo_messages.setdefault(user, []).append(photo["message_id"])
            # Its answer: the bot's next message in the chat (Telegram delivers one chat's updates in
            # order) — the prediction quoting the photo, or a message that says why there is none.
            try:
                event = await telegram.wait_for(
                    user, _from_bot, after=before, timeout=config.answer_timeout_s
                )
            except TimeoutError:
                continue  # counted as lost: sent, never answered
            answer = event["message"]
            tally.latencies_ms.append(1000 * (time.monotonic() - sent_at))
            keyboard = answer.get("reply_markup", {}).get("inline_keyboard", [])
            if not keyboard:
                tally.without_buttons += 1
                continue
            after = telegram.chat(user).revision
            await telegram.press_button(user, answer["message_id"], keyboard[0][0]["callback_data"])
            tally.taps += 1
            await telegram.wait_for(
                user,
                lambda e, m=answer["message_id"]: e["type"] == "edit" and e["message"]["message_id"] == m,
                after=after,
                timeout=config.answer_timeout_s,
            )

    await asyncio.gather(*(person(user) for user in users))
    return tally


def _kill(bot: asyncio.subprocess.Process, tally: Tally) -> None:
    """SIGKILL one bot replica and one replica of the model deployment (the Ray actor's process)."""
    bot.kill()
    tally.killed.append(f"bot replica pid {bot.pid}")
    replicas = ray_replica_pids(RAY_REPLICA_TITLE)
    if replicas:
        os.kill(replicas[0], signal.SIGKILL)
        tally.killed.append(f"inference replica model-{MODEL} pid {replicas[0]}")
    say(f"killed: {', '.join(tally.killed)}")


def ray_replica_pids(title: str) -> list[int]:
    """PIDs of the processes whose title (Ray names its actors' processes `ray::…`) contains `title`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ray::") and title in command:
            found.append(int(entry.name))
    return sorted(found)


def _result(
    config: ScaleConfig, telegram: Any, users: list[int], tally: Tally, seconds: float, database: str
) -> Json:
    bot_messages = {
        user: [
            e["message"]
            for e in telegram.chat(user).events
            if e["type"] == "message" and e["message"]["from"]["is_bot"]
        ]
        for user in users
    }
    answers_per_photo = [
        sum(1 for m in bot_messages[user] if m.get("reply_to_message", {}).get("message_id") == photo)
        for user in users
        for photo in tally.photo_messages.get(user, [])
    ]
    asked = len(users) + tally.sent  # /digit and each photo
    sent_messages = sum(len(messages) for messages in bot_messages.values())
    feedback, done, updates, taken_over, in_doubt = _database_counts(database)
    latencies = sorted(tally.latencies_ms)
    deliveries = telegram.webhook_deliveries
    answered = len(tally.latencies_ms)  # a person sends the next photo once the last is answered
    return {
        "bot_replicas": config.bot_replicas,
        "inference_replicas": config.inference_replicas,
        "users": config.users,
        "sent": tally.sent,
        "answered": answered,
        "lost": tally.sent - answered,
        "duplicates": max(0, sent_messages - asked),
        "killed": tally.killed,
        "seconds": round(seconds, 1),
        "photos_per_s": round(tally.sent / seconds, 2),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "taps": tally.taps,
        "feedback_stored": feedback,
        "without_buttons": tally.without_buttons,
        "photos_answered_twice": sum(1 for n in answers_per_photo if n > 1),
        "updates": updates,
        "updates_done": done,
        "taken_over": taken_over,
        "in_doubt": in_doubt,
        "webhook_calls": len(deliveries),
        "webhook_failed_calls": sum(1 for d in deliveries if d.outcome != "ok"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }


def _database_counts(database: str) -> tuple[int, int, int, int, int]:
    import psycopg

    with psycopg.connect(database) as connection:
        (feedback,) = connection.execute("SELECT count(*) FROM feedback").fetchone() or (0,)
        row = connection.execute(
            """SELECT count(done_at), count(*), count(*) FILTER (WHERE claims > 1),
                      coalesce(sum(in_doubt), 0) FROM webhook_updates"""
        ).fetchone()
    done, updates, taken_over, in_doubt = row or (0, 0, 0, 0)
    return int(feedback), int(done), int(updates), int(taken_over), int(in_doubt)


def _from_bot(event: Json) -> bool:
    return bool(event["type"] == "message" and event["message"]["from"]["is_bot"])


def _reply_to(message_id: int) -> Callable[[Json], bool]:
    def matches(event: Json) -> bool:
        return bool(
            _from_bot(event) and event["message"].get("reply_to_message", {}).get("message_id") == message_id
        )

    return matches


async def _all_up(telegram: Any, ports: list[int]) -> bool:
    import aiohttp

    if not telegram.webhook_url:
        return False
    async with aiohttp.ClientSession() as http:
        for port in ports:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status != 200:
                        return False
            except aiohttp.ClientError:
                return False
    return True


async def _wait(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def _true(value: bool) -> bool:
    return value


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM each process group (Ray's processes with `serve inference`), SIGKILL what lingers."""
    for process in processes:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # what its group left behind (Ray's raylet, workers)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def json_line(result: Json) -> str:
    return json.dumps(result, ensure_ascii=False, sort_keys=False)
