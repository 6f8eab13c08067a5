"""`photobot worker`: claim and run the retraining jobs that /retrain queues (RETRAIN_WORKERS=external).

Run it where the training should happen (a GPU node) with the bots' DATABASE_URL, TELEGRAM_BOT_TOKEN
and TELEGRAM_API_URL, and a DATA_DIR of its own (its logs, reports and cache of models and photos;
with the SQLite default it must be the bots' DATA_DIR, so the same machine). It claims one queued job
at a time (one per model across every worker), runs it as `photobot retrain --job-id N --worker W`,
edits the admin's progress message, sends the report, and holds the job by a lease of RETRAIN_LEASE_S
that it renews; a worker that dies is seen by the others and by the bots, which fail its job and say
why (`bot.retrain_workers`). Several workers may run, on as many machines.

SIGTERM or Ctrl-C stops it: the job it runs is stopped (failed, and the admin told), then it exits 0.
`--once` runs one job, waiting for one to be queued, then exits: a worker as a batch job (`ray job
submit --entrypoint-num-gpus 1 -- photobot worker --once`, a Kubernetes Job, cron). With METRICS_PORT
it serves its jobs' figures and its process's at http://METRICS_LISTEN:METRICS_PORT/metrics.
"""

from __future__ import annotations

import argparse
import logging
import os

from photobot.commands import positive_int
from photobot.errors import UserFacingError
from photobot.settings import Settings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="run one job (waiting for one), then exit")
    parser.add_argument(
        "--poll-s", type=float, default=2.0, help="how often the queue is looked at (default 2)"
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="lower the jobs' CPU priority by N (a worker beside a bot)"
    )
    # Each job's own options (as `photobot retrain`'s), for every job this worker runs.
    parser.add_argument(
        "--limit", type=positive_int, help="digits: MNIST training digits; flowers: per class"
    )
    parser.add_argument(
        "--test-limit", type=positive_int, help="digits: first N MNIST test digits for the gate"
    )
    parser.add_argument(
        "--epochs", type=positive_int, help="default: the retrain's own (see photobot retrain)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from bot import redaction

    if not settings.telegram_bot_token:
        raise UserFacingError(
            "TELEGRAM_BOT_TOKEN is not set: the worker edits the admin's progress message and sends "
            "the report with the bot's token"
        )
    if not args.poll_s > 0:
        raise UserFacingError(f"--poll-s must be above 0, got {args.poll_s}")
    redaction.install([settings.telegram_bot_token])
    os.environ.pop("TELEGRAM_BOT_TOKEN", None)  # the jobs it starts get no token (wiring.job_environment)
    from photobot.wiring import check_database

    check_database(settings)
    if settings.database_url is None:
        log.info(
            "SQLite: this worker shares %s with the bots, so it runs on their machine", settings.data_dir
        )
    return asyncio.run(_work(args, settings))


async def _work(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from telegram import Bot

    from bot.app import api_urls
    from bot.metrics import WorkerMetrics
    from bot.retrain_workers import RetrainWorker
    from bot.transport import bot_api_request
    from photobot.serving import model_store
    from photobot.wiring import metrics_registry, open_store, serve_process_metrics, worker_config

    base_url, base_file_url = api_urls(settings.telegram_api_url)
    bot = Bot(
        settings.telegram_bot_token or "",
        base_url=base_url,
        base_file_url=base_file_url,
        request=bot_api_request(8, settings.bot_api_timeouts),
    )
    registry = metrics_registry(settings)
    stop_metrics = await serve_process_metrics(settings, registry)  # first: a port in use stops it here
    store = await open_store(settings)
    try:
        async with bot:
            worker = RetrainWorker(
                worker_config(settings, poll_s=args.poll_s, nice=args.nice, job_args=_job_args(args)),
                store,
                bot,
                await asyncio.to_thread(model_store, settings),
                metrics=WorkerMetrics(registry),
            )
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, worker.stop)
            ran = await worker.run(once=args.once)
            log.info("worker %s: stopped after %d job(s)", worker.name, ran)
    finally:
        await store.close()
        await stop_metrics()
    return 0


def _job_args(args: argparse.Namespace) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("limit", "test_limit", "epochs"):
        value = getattr(args, name)
        if value is not None:
            found += [f"--{name.replace('_', '-')}", str(value)]
    return tuple(found)
