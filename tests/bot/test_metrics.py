"""The bot's Prometheus endpoint (METRICS_PORT), scraped while a real bot answers through the fake Bot API:
photos answered and their latencies, refusals, flood drops, feedback taps, the engine's batches and the
version that serves; a port already taken is one clear line; a webhook replica's calls; and `photobot
worker`'s jobs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.playground.bot_api_server import BotApiServer
from bot.webhook import run_webhook
from inference.model_store import ModelStore
from photobot.errors import UserFacingError
from photobot.settings import Settings
from photobot.wiring import build_bot, open_services, webhook_config
from storage import Store
from tests.support.bot import TOKEN, button_data, buttons, digit_photo, start_bot, stop_bot
from tests.support.processes import photobot_env, photobot_process, stop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:PORT/metrics, by name and labels."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """A metric's samples summed over their labels."""
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_the_endpoint_counts_answers_refusals_drops_and_taps_and_names_the_serving_version(
    tmp_path: Path, model_dir: Path, glyphs
) -> None:
    port = free_port()
    bot = await start_bot(tmp_path / "data", model_dir, metrics_port=port, user_photos_per_minute=3)
    try:
        user = bot.user(7001)
        before = await scrape(port)
        assert value(before, "photobot_photos_answered_total", model="digits", status="ok") == 0
        answers = [await bot.photo(user, digit_photo(glyphs[digit], seed=digit)) for digit in (2, 5, 7)]
        rated = next(a for a in answers if "✅ Correct" in [text for text, _ in buttons(a)])
        await bot.press(user, rated, button_data(rated, "✅ Correct"))
        await bot.press(user, rated, button_data(rated, "✅ Correct"), check=False, edited=False)  # again
        flood = await bot.photo(user, digit_photo(glyphs[9], seed=9))  # the fourth photo this minute
        assert flood["text"].startswith("You're sending photos faster"), flood["text"]
        refused = await bot.document(user, b"not an image", "notes.txt", "text/plain")
        assert "notes.txt" in refused["text"]

        after = await scrape(port)
        answered = {
            dict(labels)["status"]: v
            for (name, labels), v in after.items()
            if name == "photobot_photos_answered_total" and dict(labels)["model"] == "digits"
        }
        assert sum(answered.values()) == 3, answered
        assert value(after, "photobot_answer_seconds_count", model="digits") == 3
        assert value(after, "photobot_classify_seconds_count", model="digits") == 3
        # photo → answer holds the classifier's time and more (download, database, reply)
        assert value(after, "photobot_answer_seconds_sum", model="digits") > value(
            after, "photobot_classify_seconds_sum", model="digits"
        )
        assert value(after, "photobot_photos_in_progress") == 0
        assert value(after, "photobot_feedback_total", outcome="correct") == 1
        assert value(after, "photobot_feedback_total", outcome="already") == 1
        assert value(after, "photobot_flood_dropped_total", limit="photos") == 1
        assert value(after, "photobot_photos_refused_total", reason="not_an_image") == 1
        assert total(after, "photobot_errors_total") == 0

        # The engine's own counts, read from the classifier: every photo went through the digit model
        # once, in a batch of the engine or in a decode process (LiteRT); the histogram has each batch.
        engine = value(after, "photobot_engine_requests_total", model="digits") + value(
            after, "photobot_engine_in_decode_workers_total", model="digits"
        )
        assert engine == 3
        batches = value(after, "photobot_engine_batches_total", model="digits")
        assert value(after, "photobot_engine_batch_rows_count", model="digits") == batches
        assert value(after, "photobot_engine_batch_rows_bucket", model="digits", le="+Inf") == batches
        assert value(after, "photobot_engine_queued", model="digits") == 0

        serving = ModelStore(bot.settings.models_dir).active_version("digits")
        assert serving is not None
        assert value(after, "photobot_model_version", model="digits") == serving
        assert total(after, "process_cpu_seconds_total") > 0  # the process's own figures
    finally:
        await stop_bot(bot)
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the services
        await scrape(port)


async def test_a_metrics_port_in_use_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, model_dir: Path
) -> None:
    shutil.copytree(model_dir, tmp_path / "data" / "models")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(data_dir=tmp_path / "data", metrics_port=port)
        with pytest.raises(UserFacingError, match=rf"127\.0\.0\.1:{port} .*METRICS_PORT"):
            await open_services(settings, names=("digits",))


async def test_photobot_worker_serves_the_jobs_it_ran(tmp_path: Path, model_dir: Path) -> None:
    """`photobot worker` with METRICS_PORT, as an operator runs it: a queued job it runs (one with too
    few labelled photos, so it ends without training) is counted with its status and decision."""
    data = tmp_path / "data"
    shutil.copytree(model_dir, data / "models")
    store = await Store.open(data / "photobot.sqlite3", data / "images")
    try:
        job = await store.create_retrain_job("digits", language="en", runner="worker")
    finally:
        await store.close()
    port = free_port()
    async with BotApiServer(TOKEN) as server:
        env = photobot_env(server.url, data, METRICS_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2")
        async with photobot_process(
            "worker", "--poll-s", "0.2", env=env, log=tmp_path / "worker.log"
        ) as process:
            samples: Samples = {}
            for _ in range(600):  # the job process imports TensorFlow: allow minutes on a busy machine
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    samples = await scrape(port)
                if total(samples, "photobot_worker_jobs_total"):
                    break
                await asyncio.sleep(0.5)
            code = await stop(process)
    output = (tmp_path / "worker.log").read_text()
    assert code == 0, output
    done = await finished(data, job.id)
    ran = {
        dict(labels)["status"]: v
        for (name, labels), v in samples.items()
        if name == "photobot_worker_jobs_total"
    }
    assert ran == {done.status: 1}, output
    assert (
        value(
            samples,
            "photobot_worker_jobs_total",
            model="digits",
            status=done.status,
            decision=done.decision or "none",
        )
        == 1
    )
    assert value(samples, "photobot_worker_job_seconds_count", model="digits") == 1
    assert value(samples, "photobot_worker_running", model="digits") == 0
    assert value(samples, "photobot_worker_poll_errors_total") == 0


async def finished(data: Path, job_id: int):
    store = await Store.open(data / "photobot.sqlite3", data / "images")
    try:
        job = await store.get_retrain_job(job_id)
    finally:
        await store.close()
    assert job is not None and not job.active
    return job


async def test_a_webhook_replica_exports_what_became_of_its_calls(tmp_path: Path, model_dir: Path) -> None:
    """WEBHOOK_URL: the replica's WebhookCounts, read at each scrape, beside the bot's own figures."""
    shutil.copytree(model_dir, tmp_path / "data" / "models")
    webhook_port, port = free_port(), free_port()
    async with BotApiServer(TOKEN, local_mode=True) as server:
        settings = Settings(
            telegram_bot_token=TOKEN,
            telegram_api_url=server.url,
            data_dir=tmp_path / "data",
            webhook_url=f"http://127.0.0.1:{webhook_port}",
            webhook_port=webhook_port,
            metrics_port=port,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(
            run_webhook(build_bot(settings, names=("digits",)), webhook_config(settings), stop=stop)
        )
        try:
            for _ in range(600):
                if server.webhook_url or running.done():
                    break
                await asyncio.sleep(0.1)
            user = server.add_user(8201, "Hook")["id"]
            await server.send_text(user, "/help")
            await server.wait_for(
                user, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], timeout=60
            )
            samples: Samples = {}
            for _ in range(100):  # counted once the update is recorded done, just after its answer
                samples = await scrape(port)
                if value(samples, "photobot_webhook_updates_total", outcome="answered"):
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await running
    assert value(samples, "photobot_webhook_updates_total", outcome="answered") == 1
    assert value(samples, "photobot_webhook_updates_total", outcome="in_doubt") == 0
    assert value(samples, "photobot_webhook_updates_total", outcome="refused") == 0
