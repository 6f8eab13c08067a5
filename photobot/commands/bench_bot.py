"""`photobot bench bot`: the whole bot end to end through the local Bot API server, against a bare bot.

The local Bot API server and the simulated users run in this process; the bot runs in another
(`photobot run` with TELEGRAM_API_URL pointing here), exactly as it would against Telegram. Users work
in a closed loop: each sends a photo (re-encoded into Telegram's sizes beforehand), waits for the answer,
then sends the next. Reported per scenario: photos/s and p50/p95 latency from the photo reaching the
server to the answer reaching it.

The same run measures a bare python-telegram-bot bot (this module run as a script) that downloads the
same photo size and replies "ok" without classifying or storing anything: the transport's ceiling on
this machine. It is python-telegram-bot as it comes (httpx); `--bare-transport photobot` gives it
PhotoBot's aiohttp transport instead, to see what classifying and storing cost on the same wire. This
VM's speed drifts by up to 1.7× between runs a minute apart, so `--rounds N` alternates the two bots N
times and reports each round's ratio (bare bot, then PhotoBot right after) and their median. The bot
runs with its flood limit off (one simulated user sends far more than 20 photos a minute; `--flood-limit
N` sets it high instead, so every update and photo is counted and none refused) and its outgoing limiter
at --outgoing-rate (Telegram's 30 messages/s would cap the figure at 30 otherwise). `--checkout DIR`
also runs the PhotoBot of another checkout (its code on PYTHONPATH, this environment's packages), in
turn with this one every round, and reports this one's throughput as a share of it: before and after a
change, on the same noisy machine. `--metrics` also runs PhotoBot with its Prometheus endpoint on
(METRICS_PORT, scraped every SCRAPE_S while it runs; the others run with it off), in turn with PhotoBot
without, the order swapped every round, and reports its throughput as a share of PhotoBot's without.

`--backend sqlite|postgresql|both` picks PhotoBot's database: the SQLite file in its DATA_DIR (the
default), or a PostgreSQL database of its own (DATABASE_URL) on a throwaway server started for the run
(`photobot.commands.bench_backends`, as `bench storage` starts it) and removed when the run ends; the
`--models` store is registered in that database, as `photobot db migrate` copies an install's models, so
both serve the same versions. `both` runs PhotoBot on each in turn every round, the order swapped every
round, and prints their figures side by side with PostgreSQL's as a ratio of SQLite's in the same round
(`bench_bot_report` says what `--json` holds). With `both`, leave out `--checkout` and `--metrics`.

Whatever ends the run (a bot that does not start within --start-timeout seconds or exits first, an
error, Ctrl-C, SIGTERM) stops every bot it started, and whatever those left in their process group, and
removes the throwaway server and the temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from photobot.commands.bench_backends import ThrowawayPostgres, add_backend_option, chosen
from photobot.commands.bench_bot_photos import bench_photos
from photobot.commands.bench_bot_report import Scenario, as_json, print_results, row
from photobot.errors import UserFacingError
from photobot.settings import Settings

TOKEN = "7777:bench"
KINDS = ("digits", "flowers")
SCRAPE_S = 1.0  # Prometheus scrapes every 15 s or so; once a second is the harsher case


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", default="1,10,50", help="simulated users per scenario (default 1,10,50)")
    parser.add_argument("--kinds", default="digits,flowers", help="photo kinds (default digits,flowers)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per scenario (default 10)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    parser.add_argument("--photos", type=int, default=40, help="distinct photos per kind (default 40)")
    parser.add_argument("--models", type=Path, help="copy this model store (default: the shipped models)")
    parser.add_argument(
        "--outgoing-rate",
        type=float,
        default=0.0,
        help="the bot's outgoing messages/s limit (default 0: off)",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare bot")
    parser.add_argument(
        "--flood-limit",
        type=int,
        default=0,
        help="PhotoBot's per-user limits (photos and updates a minute; default 0: off)",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        help="also run the PhotoBot of this checkout (e.g. a git worktree of the code before a change)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also run PhotoBot with its metrics endpoint on and scraped, in turn with it off",
    )
    parser.add_argument(
        "--bare-transport",
        choices=("httpx", "photobot"),
        default="httpx",
        help="the bare bot's HTTP: python-telegram-bot's default httpx (default), or PhotoBot's aiohttp",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the bare bot and PhotoBot N times (default 1)"
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "kind"),
        default="auto",
        help="auto: the default mode; kind: users first send /digit or /flower to match their photos",
    )
    add_backend_option(
        parser,
        default="sqlite",
        help_text="PhotoBot's database: sqlite (default), postgresql (a throwaway server), or both in turn",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="seconds a bot may take to start answering before the run gives up (default 300)",
    )
    parser.add_argument("--json", action="store_true", help="end with the results as one JSON object")


def main(args: argparse.Namespace, settings: Settings) -> int:
    users = [int(u) for u in args.users.split(",") if u]
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds):
        raise UserFacingError(f"--kinds takes {', '.join(KINDS)}")
    backends = chosen(args.backend)
    if len(backends) > 1 and (args.checkout or args.metrics):
        raise UserFacingError("--backend both compares the backends: run --checkout or --metrics on one")
    photos = {kind: bench_photos(kind, args.photos, settings) for kind in kinds}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    pool = os.environ.get("ENGINE_POOL", settings.engine.pool)
    limit = args.outgoing_rate or "off"
    print(
        f"{os.cpu_count()} CPUs, load average {load}; engine pool {pool}, outgoing limit {limit}, "
        f"mode {args.mode}, backend {args.backend}"
    )
    # Until asyncio.run takes SIGTERM over, it ends the run like an error, so the server is removed.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        with ThrowawayPostgres() as postgres:
            on_postgres = _photobots(args) if "postgresql" in backends else []
            databases = {(bot, "postgresql"): _database(postgres, args.models) for bot in on_postgres}
            try:
                server_pid = postgres.server.pid if postgres.server else None
                results = asyncio.run(_bench(args, settings, users, photos, backends, databases, server_pid))
            except asyncio.CancelledError:  # SIGTERM: the bots were stopped and the temporary folder removed
                _stopped()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_results(results, "checkout" if args.checkout else None)
    if args.json:
        print(json.dumps(as_json(results), sort_keys=True))
    return 0


def _stopped(*_: object) -> NoReturn:
    raise UserFacingError("stopped by SIGTERM before the end; nothing reported")


def _photobots(args: argparse.Namespace) -> list[str]:
    """The PhotoBots of the run ("photobot", and "checkout" or "metrics" when asked): each has its own
    data folder and, on PostgreSQL, its own database."""
    return (["checkout"] if args.checkout else []) + ["photobot"] + (["metrics"] if args.metrics else [])


def _database(postgres: ThrowawayPostgres, models: Path | None) -> str:
    """A fresh database on the throwaway server, holding the `--models` store's versions if given."""
    url = postgres.database()
    if models is not None:
        from photobot.commands.db import local_models
        from storage import migration_models
        from storage.connect import open_database

        local = local_models(models)
        db = open_database(url)
        try:
            migration_models.copy(db, local, migration_models.look(db, local))
        finally:
            db.close()
    return url


def _line_up(
    args: argparse.Namespace, backends: tuple[str, ...], round_: int
) -> list[tuple[str, str | None]]:
    """The bots of one round in order, each with its backend (None for the bare bot). PhotoBot with and
    without metrics, and on either backend, take turns going first: the VM drifts within a round too."""
    photobots = _photobots(args)
    if args.metrics and round_ % 2 == 0:
        photobots[-2:] = ["metrics", "photobot"]
    ordered = backends if round_ % 2 == 1 else backends[::-1]
    bare: list[tuple[str, str | None]] = [] if args.no_bare else [("bare", None)]
    return bare + [(bot, backend) for bot in photobots for backend in ordered]


# ------------------------------------------------------------------------------------------ the run


async def _bench(
    args: argparse.Namespace,
    settings: Settings,
    users: list[int],
    photos: dict[str, list[bytes]],
    backends: tuple[str, ...],
    databases: dict[tuple[str, str], str],
    database_pid: int | None = None,
) -> list[Scenario]:
    from bot.playground.bot_api_server import BotApiServer

    # SIGTERM cancels the run like Ctrl-C does, so the bots are stopped and the temporary folder goes;
    # once only, so a second SIGTERM does not cut that clean-up short.
    running = asyncio.current_task()
    if running is not None:  # always, inside asyncio.run
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: running.cancelling() or running.cancel()
        )
    results: list[Scenario] = []
    async with BotApiServer(TOKEN) as server:
        for kind_photos in photos.values():
            for data in kind_photos:
                await server._photo_sizes(data)  # Telegram re-encodes on upload, before the bot sees it
        with tempfile.TemporaryDirectory(prefix="photobot-bench-bot-") as temp:
            for round_ in range(1, max(1, args.rounds) + 1):
                for bot, backend in _line_up(args, backends, round_):
                    # the same data folder every round: models are converted once
                    folder = Path(temp) / (bot if backend is None else f"{bot}-{backend}")
                    database = databases.get((bot, backend)) if backend else None
                    port = _free_port() if bot == "metrics" else 0
                    process = await _start(bot, server, folder, args, database, metrics_port=port)
                    # what the bot opens: its DATABASE_URL, or the SQLite file in its DATA_DIR
                    stores = (
                        None if bot == "bare" else Settings(data_dir=folder, database_url=database).database
                    )
                    scraping = (
                        asyncio.create_task(_scrape(f"http://127.0.0.1:{port}/metrics")) if port else None
                    )
                    try:
                        for kind, kind_photos in photos.items():
                            for count in users:
                                before = _predictions(stores)
                                result = await _scenario(
                                    server,
                                    bot,
                                    kind,
                                    count,
                                    kind_photos,
                                    args,
                                    process.pid,
                                    round_,
                                    backend=backend,
                                    database_pid=database_pid if database else None,
                                )
                                stored = _predictions(stores)
                                if stored is not None and before is not None:
                                    result = dataclasses.replace(result, stored=stored - before)
                                print(row(result), flush=True)
                                results.append(result)
                    finally:
                        if scraping is not None:
                            print(await _stop_scraping(scraping), flush=True)
                        await _stop(process)
    return results


async def _start(
    bot: str,
    server,
    folder: Path,
    args: argparse.Namespace,
    database: str | None,
    *,
    metrics_port: int = 0,
) -> asyncio.subprocess.Process:
    """Start a bot and wait until it polls (and has its models converted); stopped again if it does not."""
    fresh = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if args.models and fresh and database is None:  # on PostgreSQL they are in its database (`_database`)
        shutil.copytree(args.models, folder / "models")
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": server.url,
        "DATA_DIR": str(folder),
        "DATABASE_URL": database or "",  # empty: the SQLite file under DATA_DIR, whatever is exported
        "USER_PHOTOS_PER_MINUTE": str(args.flood_limit),
        "USER_UPDATES_PER_MINUTE": str(args.flood_limit),
        "OUTGOING_MESSAGES_PER_S": str(args.outgoing_rate),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LOG_LEVEL": "WARNING",
        "BARE_TRANSPORT": args.bare_transport,
        "METRICS_PORT": str(metrics_port),
    }
    if bot == "checkout":  # the other checkout's code first on the path (an editable install points here)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(args.checkout.resolve()), *filter(None, [env.get("PYTHONPATH")])]
        )
    command = (
        [sys.executable, "-m", "photobot.commands.bench_bot"]
        if bot == "bare"
        else [sys.executable, "-m", "photobot", "run"]
    )
    polls = len(server.polls)
    log_file = folder / "bot.log"
    log = open(log_file, "wb")  # noqa: SIM115 - the child owns it from here
    # A session of its own: `_stop` ends whatever the bot started (its decode processes) with it, and
    # Ctrl-C reaches only this process, which stops the bots in order.
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=folder, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    try:
        started = time.monotonic()
        while len(server.polls) == polls:
            if process.returncode is not None or time.monotonic() - started > args.start_timeout:
                why = "exited" if process.returncode is not None else f"no poll in {args.start_timeout:g} s"
                raise UserFacingError(
                    f"the {bot} bot did not start ({why}); its log ends:\n{_tail(log_file)}"
                )
            await asyncio.sleep(0.1)
        if bot != "bare":
            await _conversions_done(folder / "models", process, database)
    except BaseException:
        await _stop(process)
        raise
    return process


def _predictions(database: Path | str | None) -> int | None:
    """The predictions in a PhotoBot's database, read beside the running bot: its answers were stored
    where the run meant them to be (None: no database, or one newer than this PhotoBot reads)."""
    from storage.connect import open_database
    from storage.errors import SchemaTooNew

    if database is None:
        return None
    try:
        db = open_database(database, read_only=True)
    except SchemaTooNew:  # the PhotoBot of a newer --checkout
        return None
    try:
        return int(db.execute("SELECT count(*) FROM predictions").fetchone()[0])
    finally:
        db.close()


def _tail(log: Path, lines: int = 15) -> str:
    """The end of a bot's log: the run's temporary folder, and the log with it, is gone once it stops."""
    text = log.read_text(errors="replace").rstrip() if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _scrape(url: str) -> tuple[int, float]:
    """Scrape the metrics bot's endpoint every SCRAPE_S, as Prometheus would, until cancelled; the number
    of scrapes and the photos it had counted at the last."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    scrapes, answered = 0, 0.0
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    body = await response.text()
            except asyncio.CancelledError:
                return scrapes, answered
            except aiohttp.ClientError:
                body = ""
            scrapes += 1
            answered = sum(
                sample.value
                for family in text_string_to_metric_families(body)
                for sample in family.samples
                if sample.name == "photobot_photos_answered_total"
            )
            try:
                await asyncio.sleep(SCRAPE_S)
            except asyncio.CancelledError:
                return scrapes, answered


async def _stop_scraping(task: asyncio.Task[tuple[int, float]]) -> str:
    task.cancel()
    scrapes, answered = await task
    return f"metrics endpoint: scraped {scrapes} times; it had counted {answered:.0f} photos answered"


async def _conversions_done(
    models: Path, process: asyncio.subprocess.Process, database: str | None = None
) -> None:
    """Wait while the bot converts its models for LiteRT in the background (first start of a version):
    the benchmark measures what serves for good. Gives up after 120 s (a bot that serves with Keras).
    On PostgreSQL the versions are the database's and `models` the bot's cache of them."""
    from inference.catalogue import DEFAULT_CATALOGUE
    from inference.lite import conversion_file, lite_installed
    from inference.model_store import ModelStore
    from storage.model_registry import registry_for

    if os.environ.get("ENGINE_RUNTIME", "auto") != "auto" or not lite_installed():
        return
    store = ModelStore(models, registry=registry_for(database) if database else None)
    try:
        active = [store.active(name) for name in DEFAULT_CATALOGUE.names]
        # Named once: the name hashes the model file (~20 MB for flowers), on the simulated users' loop.
        expected = [conversion_file(version.model_file) for version in active if version is not None]
    finally:
        store.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.returncode is None:
        if all(path.is_file() for path in expected):
            await asyncio.sleep(1.0)  # the bot loads the conversion after writing it
            return
        await asyncio.sleep(0.2)
    print("the bot's models were not converted for LiteRT within 120 s; measuring anyway", flush=True)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, a minute to exit, then SIGKILL; then SIGKILL to whatever is left in its process group
    (its decode processes, if it died before stopping them)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its own group (start_new_session): nothing of ours


_next_user = iter(range(1_000_000, 2_000_000))


async def _scenario(
    server,
    bot: str,
    kind: str,
    users: int,
    photos: list[bytes],
    args: argparse.Namespace,
    pid: int,
    round_: int,
    *,
    backend: str | None = None,
    database_pid: int | None = None,
) -> Scenario:
    start = time.time()
    measure_from, stop_at = start + args.warmup, start + args.warmup + args.seconds
    samples: list[tuple[float, float, bool]] = []  # (answered at, latency s, with buttons)
    ids = [next(_next_user) for _ in range(users)]
    for user_id in ids:
        server.add_user(user_id, "Bench")
    if args.mode == "kind" and bot != "bare":
        await asyncio.gather(
            *(_say(server, user_id, "/digit" if kind == "digits" else "/flower") for user_id in ids)
        )
        start = time.time()
        measure_from, stop_at = start + args.warmup, start + args.warmup + args.seconds
    cpu = asyncio.create_task(_cpu_during(pid, database_pid, measure_from, stop_at))
    await asyncio.gather(*(_user(server, user_id, photos, stop_at, samples) for user_id in ids))
    bot_cpu_s, server_cpu_s, database_cpu_s = await cpu
    measured = [(latency, ok) for at, latency, ok in samples if measure_from <= at <= stop_at]
    latencies = sorted(latency * 1000 for latency, _ in measured)
    count = len(measured)
    return Scenario(
        round=round_,
        bot=bot,
        kind=kind,
        users=users,
        photos=count,
        seconds=args.seconds,
        photos_per_s=count / args.seconds,
        p50_ms=statistics.median(latencies) if latencies else None,
        p95_ms=_percentile(latencies, 0.95),
        answered=sum(ok for _, ok in measured),
        bot_cpu_ms=1000 * bot_cpu_s / count if count and bot_cpu_s is not None else None,
        server_cpu_ms=1000 * server_cpu_s / count if count else None,
        backend=backend,
        database_cpu_ms=1000 * database_cpu_s / count if count and database_cpu_s is not None else None,
    )


async def _cpu_during(
    pid: int, database_pid: int | None, start: float, stop: float
) -> tuple[float | None, float, float | None]:
    """CPU seconds used between two wall-clock times by the bot's process tree, by this process, and by
    the PostgreSQL server's processes (the postmaster and its children) when there is one."""
    from benchmarks.inference import process_tree_cpu_seconds

    def tree(root: int | None) -> float | None:
        return None if root is None else process_tree_cpu_seconds(root)

    await asyncio.sleep(max(0.0, start - time.time()))
    bot_before, own_before, db_before = tree(pid), time.process_time(), tree(database_pid)
    await asyncio.sleep(max(0.0, stop - time.time()))
    bot_after, own_after, db_after = tree(pid), time.process_time(), tree(database_pid)
    bot = None if bot_before is None or bot_after is None else bot_after - bot_before
    database = None if db_before is None or db_after is None else db_after - db_before
    return bot, own_after - own_before, database


async def _user(server, user_id: int, photos: list[bytes], stop_at: float, samples: list) -> None:
    """One person in a closed loop: send a photo, wait for the answer, send the next."""
    rng = random.Random(user_id)
    chat = server.chat(user_id)
    while time.time() < stop_at:
        after = chat.revision
        sent_at = time.time()
        await server.send_photo(user_id, rng.choice(photos))
        try:
            event = await server.wait_for(
                user_id,
                lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"],
                after=after,
                timeout=30,
            )
        except TimeoutError:
            continue
        keyboard = event["message"].get("reply_markup", {}).get("inline_keyboard")
        samples.append((event["time"], event["time"] - sent_at, bool(keyboard)))


async def _say(server, user_id: int, text: str) -> None:
    after = server.chat(user_id).revision
    await server.send_text(user_id, text)
    await server.wait_for(
        user_id, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], after=after, timeout=30
    )


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# ------------------------------------------------------------------------------------------ bare bot


def bare_bot() -> None:
    """Download the photo (the size PhotoBot would pick) and reply, nothing else: the transport's ceiling."""
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    from bot.handlers.photos import pick_photo_size

    async def reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None:
            return
        size = pick_photo_size(message.photo)
        telegram_file = await context.bot.get_file(size.file_id)
        data = await telegram_file.download_as_bytearray()
        await message.reply_text(f"ok {len(data)}", do_quote=True)

    root = os.environ["TELEGRAM_API_URL"].rstrip("/")
    builder = (
        Application.builder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .concurrent_updates(256)
    )
    if os.environ.get("BARE_TRANSPORT") == "photobot":
        from bot.transport import bot_api_request, get_updates_request

        builder = builder.request(bot_api_request()).get_updates_request(get_updates_request())
    application = builder.build()
    application.add_handler(MessageHandler(filters.PHOTO, reply))
    application.run_polling(timeout=10, allowed_updates=[Update.MESSAGE])


if __name__ == "__main__":
    bare_bot()
