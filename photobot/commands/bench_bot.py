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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings

TOKEN = "7777:bench"
KINDS = ("digits", "flowers")
SCRAPE_S = 1.0  # Prometheus scrapes every 15 s or so; once a second is the harsher case


@dataclass(frozen=True)
class Scenario:
    round: int  # from 1; see --rounds
    bot: str  # "bare", "photobot", "checkout" (the PhotoBot of --checkout), "metrics" (METRICS_PORT on)
    kind: str  # "digits" or "flowers"
    users: int
    photos: int  # answered within the measured window
    seconds: float
    photos_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    answered: int  # answers with ✅ / ❌ buttons (the rest were refusals or errors)
    bot_cpu_ms: float | None  # CPU time of the bot's process tree per answered photo (load-independent)
    server_cpu_ms: float | None  # CPU time of this process (server + simulated users) per answered photo


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
    parser.add_argument("--json", type=Path, help="also write the results here")


def main(args: argparse.Namespace, settings: Settings) -> int:
    users = [int(u) for u in args.users.split(",") if u]
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds):
        raise UserFacingError(f"--kinds takes {', '.join(KINDS)}")
    photos = {kind: _photos(kind, args.photos, settings) for kind in kinds}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    pool = os.environ.get("ENGINE_POOL", settings.engine.pool)
    limit = args.outgoing_rate or "off"
    print(
        f"{os.cpu_count()} CPUs, load average {load}; engine pool {pool}, outgoing limit {limit}, "
        f"mode {args.mode}"
    )
    try:
        results = asyncio.run(_bench(args, settings, users, photos))
    except asyncio.CancelledError:  # SIGTERM: the bots were stopped and the temporary folder removed
        raise UserFacingError("stopped by SIGTERM before the end; nothing reported") from None
    _print(results, "checkout" if args.checkout else None)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


# ------------------------------------------------------------------------------------------ photos


def _photos(kind: str, count: int, settings: Settings) -> list[bytes]:
    if kind == "digits":
        return _digit_photos(count, settings)
    return _flower_photos(count, settings)


def _datasets(settings: Settings) -> list[Path]:
    env = os.environ.get("PHOTOBOT_DATASETS", "")
    return [*settings.datasets, *(Path(p) for p in env.split(os.pathsep) if p)]


def _digit_photos(count: int, settings: Settings) -> list[bytes]:
    """Phone-like 1280×960 photos of MNIST test digits (one to three digits), from training.synth_photos."""
    import numpy as np

    from training import synth_photos

    mnist = next((d / "mnist.npz" for d in _datasets(settings) if (d / "mnist.npz").is_file()), None)
    if mnist is None:
        raise UserFacingError("mnist.npz not found: set PHOTOBOT_DATASETS")
    with np.load(mnist) as data:
        images, labels = data["x_test"], data["y_test"]
    rng = np.random.default_rng(2026)
    photos = []
    for _ in range(count):
        picks = rng.choice(len(images), size=int(rng.integers(1, 4)))
        style = synth_photos.random_style(rng, size=(1280, 960))
        data, _label = synth_photos.render_photo([images[i] for i in picks], rng, style, labels=labels[picks])
        photos.append(data)
    return photos


def _flower_photos(count: int, settings: Settings) -> list[bytes]:
    """Real photos from flower_photos/, the same ones every run."""
    folder = next((d / "flower_photos" for d in _datasets(settings) if (d / "flower_photos").is_dir()), None)
    if folder is None:
        raise UserFacingError("flower_photos/ not found: set PHOTOBOT_DATASETS")
    files = sorted(folder.glob("*/*.jpg"))
    return [path.read_bytes() for path in random.Random(2026).sample(files, min(count, len(files)))]


# ------------------------------------------------------------------------------------------ the run


async def _bench(
    args: argparse.Namespace, settings: Settings, users: list[int], photos: dict[str, list[bytes]]
) -> list[Scenario]:
    from bot.playground.bot_api_server import BotApiServer

    # SIGTERM cancels the run like Ctrl-C does, so the bots are stopped and the temporary folder goes.
    running = asyncio.current_task()
    if running is not None:  # always, inside asyncio.run
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, running.cancel)
    results: list[Scenario] = []
    async with BotApiServer(TOKEN) as server:
        for kind_photos in photos.values():
            for data in kind_photos:
                await server._photo_sizes(data)  # Telegram re-encodes on upload, before the bot sees it
        bots = ([] if args.no_bare else ["bare"]) + (["checkout"] if args.checkout else []) + ["photobot"]
        with tempfile.TemporaryDirectory(prefix="photobot-bench-bot-") as temp:
            for round_ in range(1, max(1, args.rounds) + 1):
                # with and without metrics in turn, the order swapped every round: the VM drifts
                paired = [*bots, "metrics"] if args.metrics else bots
                if args.metrics and round_ % 2 == 0:
                    paired[-2:] = ["metrics", "photobot"]
                for bot in paired:  # the same data folder every round: models are converted once
                    port = _free_port() if bot == "metrics" else 0
                    process = await _start(bot, server, Path(temp) / bot, args, metrics_port=port)
                    scraping = (
                        asyncio.create_task(_scrape(f"http://127.0.0.1:{port}/metrics")) if port else None
                    )
                    try:
                        for kind, kind_photos in photos.items():
                            for count in users:
                                result = await _scenario(
                                    server, bot, kind, count, kind_photos, args, process.pid, round_
                                )
                                print(_row(result), flush=True)
                                results.append(result)
                    finally:
                        if scraping is not None:
                            print(await _stop_scraping(scraping), flush=True)
                        await _stop(process)
    return results


async def _start(
    bot: str, server, folder: Path, args: argparse.Namespace, *, metrics_port: int = 0
) -> asyncio.subprocess.Process:
    fresh = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if args.models and fresh:
        shutil.copytree(args.models, folder / "models")
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": server.url,
        "DATA_DIR": str(folder),
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
    log = open(folder / "bot.log", "wb")  # noqa: SIM115 - the child owns it from here
    process = await asyncio.create_subprocess_exec(*command, env=env, cwd=folder, stdout=log, stderr=log)
    log.close()
    started = time.monotonic()
    while len(server.polls) == polls:
        if process.returncode is not None or time.monotonic() - started > 300:
            raise UserFacingError(f"the {bot} bot did not start; see {folder / 'bot.log'}")
        await asyncio.sleep(0.1)
    if bot != "bare":
        await _conversions_done(folder / "models", process)
    return process


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


async def _conversions_done(models: Path, process: asyncio.subprocess.Process) -> None:
    """Wait while the bot converts its models for LiteRT in the background (first start of a version):
    the benchmark measures what serves for good. Gives up after 120 s (a bot that serves with Keras)."""
    from inference.catalogue import DEFAULT_CATALOGUE
    from inference.lite import conversion_file, lite_installed
    from inference.model_store import ModelStore

    if os.environ.get("ENGINE_RUNTIME", "auto") != "auto" or not lite_installed():
        return
    store = ModelStore(models)
    active = [store.active(name) for name in DEFAULT_CATALOGUE.names]
    # Named once: the name hashes the model file (~20 MB for flowers), on the simulated users' loop.
    expected = [conversion_file(version.model_file) for version in active if version is not None]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.returncode is None:
        if all(path.is_file() for path in expected):
            await asyncio.sleep(1.0)  # the bot loads the conversion after writing it
            return
        await asyncio.sleep(0.2)
    print("the bot's models were not converted for LiteRT within 120 s; measuring anyway", flush=True)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


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
    cpu = asyncio.create_task(_cpu_during(pid, measure_from, stop_at))
    await asyncio.gather(*(_user(server, user_id, photos, stop_at, samples) for user_id in ids))
    bot_cpu_s, server_cpu_s = await cpu
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
    )


async def _cpu_during(pid: int, start: float, stop: float) -> tuple[float | None, float]:
    """CPU seconds used between two wall-clock times by the bot's process tree and by this process."""
    from benchmarks.inference import process_tree_cpu_seconds

    await asyncio.sleep(max(0.0, start - time.time()))
    bot_before, own_before = process_tree_cpu_seconds(pid), time.process_time()
    await asyncio.sleep(max(0.0, stop - time.time()))
    bot_after, own_after = process_tree_cpu_seconds(pid), time.process_time()
    bot = None if bot_before is None or bot_after is None else bot_after - bot_before
    return bot, own_after - own_before


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


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _row(r: Scenario) -> str:
    return (
        f"round {r.round}: {r.bot:9} {r.kind:8} {r.users:>3} users: {r.photos_per_s:6.1f} photos/s, "
        f"p50 {_ms(r.p50_ms):>5} ms, p95 {_ms(r.p95_ms):>5} ms; CPU per photo: bot {_ms(r.bot_cpu_ms)} ms, "
        f"server {_ms(r.server_cpu_ms)} ms ({r.photos} photos, {r.answered} with buttons)"
    )


def _print(results: list[Scenario], checkout: str | None = None) -> None:
    print(
        "\nround  bot       kind     users  photos/s   p50 ms   p95 ms"
        "   bot CPU ms/photo   server CPU ms/photo"
    )
    for r in results:
        print(
            f"{r.round:>5}  {r.bot:9} {r.kind:8} {r.users:>5} {r.photos_per_s:9.1f} {_ms(r.p50_ms):>8} "
            f"{_ms(r.p95_ms):>8} {_ms(r.bot_cpu_ms):>18} {_ms(r.server_cpu_ms):>21}"
        )
    for (kind, users), shares in shares_of_bare(results).items():
        each = " / ".join(f"{share:.0f}%" for share in shares)
        median = f" (median {statistics.median(shares):.0f}%)" if len(shares) > 1 else ""
        print(f"{kind}, {users} users: PhotoBot reaches {each}{median} of the bare bot's throughput")
    for (kind, users), shares in metrics_shares(results).items():
        each = " / ".join(f"{share:.0f}%" for share in shares)
        median = f" (median {statistics.median(shares):.0f}%)" if len(shares) > 1 else ""
        print(
            f"{kind}, {users} users: with metrics, PhotoBot reaches {each}{median} of its throughput without"
        )
    for (kind, users), shares in (shares_of(results, checkout) if checkout else {}).items():
        each = " / ".join(f"{share:.0f}%" for share in shares)
        median = f" (median {statistics.median(shares):.0f}%)" if len(shares) > 1 else ""
        print(f"{kind}, {users} users: this PhotoBot reaches {each}{median} of the checkout's throughput")


def shares_of_bare(results: list[Scenario]) -> dict[tuple[str, int], list[float]]:
    """PhotoBot's photos/s as a percentage of the bare bot's in the same round, per kind and users."""
    return shares_of(results, "bare")


def metrics_shares(results: list[Scenario]) -> dict[tuple[str, int], list[float]]:
    """PhotoBot's photos/s with its metrics on as a percentage of its photos/s without, round by round."""
    by_key = {(r.round, r.bot, r.kind, r.users): r for r in results}
    shares: dict[tuple[str, int], list[float]] = {}
    for (round_, bot, kind, users), on in sorted(by_key.items()):
        off = by_key.get((round_, "photobot", kind, users))
        if bot == "metrics" and off is not None and off.photos_per_s:
            shares.setdefault((kind, users), []).append(100 * on.photos_per_s / off.photos_per_s)
    return shares


def shares_of(results: list[Scenario], base: str) -> dict[tuple[str, int], list[float]]:
    """PhotoBot's photos/s as a percentage of bot `base`'s in the same round, per kind and users."""
    by_key = {(r.round, r.bot, r.kind, r.users): r for r in results}
    shares: dict[tuple[str, int], list[float]] = {}
    for (round_, bot, kind, users), real in sorted(by_key.items()):
        other = by_key.get((round_, base, kind, users))
        if bot == "photobot" and other is not None and other.photos_per_s:
            shares.setdefault((kind, users), []).append(100 * real.photos_per_s / other.photos_per_s)
    return shares


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
