"""What the bot is configured with: plain, typed values handed down by the composition root
(`photobot.wiring`), so no part of `bot` reads settings or the environment itself."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TELEGRAM_API_DEFAULT = "https://api.telegram.org"


@dataclass(frozen=True)
class ApiTimeouts:
    """Seconds one Bot API call may take (BOT_API_*_TIMEOUT_S; python-telegram-bot's defaults): reading
    the answer (getUpdates adds its long poll to it), sending the request, connecting, waiting for a free
    connection of the pool, and sending a request that uploads files."""

    read_s: float = 5.0
    write_s: float = 5.0
    connect_s: float = 5.0
    pool_s: float = 1.0
    media_write_s: float = 20.0


@dataclass(frozen=True)
class BotConfig:
    token: str = field(repr=False)  # never in a repr, a log line or an exception
    api_url: str = TELEGRAM_API_DEFAULT  # root of a Bot API server: {root}/bot{token}/{method}
    admin_ids: frozenset[int] = frozenset()
    data_dir: Path = Path("var")  # where reports are read from and temporary files go
    max_image_bytes: int = 20 * 1024 * 1024  # Telegram's own download limit for bots
    user_photos_per_minute: int = 20  # per-user flood limit for photos; 0 turns it off
    user_updates_per_minute: int = 30  # per-user limit for every update; 0 turns it off
    outgoing_messages_per_s: float = 30.0  # Telegram's overall limit for a bot's messages; 0: off
    api_timeouts: ApiTimeouts = field(default_factory=ApiTimeouts)


@dataclass(frozen=True)
class RetrainConfig:
    """How the bot starts a retrain job: the job reads its own settings from `environment`, which the
    composition root builds without the bot token or any other secret."""

    data_dir: Path
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    # RETRAIN_WORKERS=external: /retrain only queues the job, a `photobot worker` runs it.
    external_workers: bool = False


@dataclass(frozen=True)
class WorkerConfig:
    """How `photobot worker` runs the jobs it claims (`bot.retrain_workers`)."""

    data_dir: Path  # the worker's own: the jobs' logs and reports, its cache of models and photos
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)  # the job's: no token
    lease_s: float = 60.0  # renewed every quarter of it while a job runs
    poll_s: float = 2.0  # how often the queue is looked at, and the job's progress read
    nice: int = 0  # lower the job's CPU priority (a worker beside a bot)
    job_args: tuple[str, ...] = ()  # appended to each job's command line (`--epochs 1`, …)
    admin_ids: frozenset[int] = frozenset()  # who may still get a job's report (its pictures show photos)
    python: str = sys.executable
