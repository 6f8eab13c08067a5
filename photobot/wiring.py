"""The composition root: `Settings` in, the running parts out.

The command line reads `Settings` once and builds everything here: the storage, the model store and
classifier (`photobot.serving`), the bot with its typed `BotConfig`, the retrain job's environment and,
inside the job, its typed `RetrainSettings`.
`bot`, `inference`, `storage` and `training` never import `photobot`: each receives what it needs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from telegram.ext import Application

from bot.app import build_application, close_services
from bot.config import BotConfig, RetrainConfig, WorkerConfig
from bot.limits import FloodLimiter
from bot.metrics import BotMetrics
from bot.services import Services
from bot.webhook import WebhookConfig
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from photobot.serving import build_photo_classifier
from photobot.settings import Settings
from training.chat_examples import ChatRules
from training.forget import remove_photo_copies
from training.retrain_settings import RetrainSettings
from training.taught_features import ArrivalFeatures

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from storage import Store

log = logging.getLogger(__name__)

# Environment variables the job process never inherits: the bot token and anything named like a secret.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY", re.I)


def taught_catalogue(settings: Settings, base: Catalogue = DEFAULT_CATALOGUE) -> Catalogue:
    """`base` with the models taught from the chat (the database's taught_models) and the labels added to
    its built-in models (`/addlabel flowers lavender`): what the command line offers, so `photobot
    retrain --model pets` works for a model made with /newmodel, and a flowers retrain learns lavender."""
    from inference.taught import Taught, with_added_labels, with_taught
    from storage import SyncStore
    from storage.connect import database_exists

    if not database_exists(settings.database):
        return base
    with SyncStore(settings.database, settings.images_dir) as store:
        rows = store.taught_models()
        added = store.added_labels()
    catalogue = with_taught(
        base, (Taught(r.name, [(label.name, label.display) for label in r.labels]) for r in rows)
    )
    return with_added_labels(catalogue, ((a.model, a.label, a.removed) for a in added))


def bot_config(settings: Settings) -> BotConfig:
    return BotConfig(
        token=settings.telegram_bot_token or "",
        api_url=settings.telegram_api_url,
        admin_ids=settings.admin_ids,
        data_dir=Path(settings.data_dir),
        max_image_bytes=settings.max_image_bytes,
        user_photos_per_minute=settings.user_photos_per_minute,
        user_updates_per_minute=settings.user_updates_per_minute,
        outgoing_messages_per_s=settings.outgoing_messages_per_s,
        api_timeouts=settings.bot_api_timeouts,
    )


def retrain_config(settings: Settings) -> RetrainConfig:
    return RetrainConfig(
        data_dir=Path(settings.data_dir),
        environment=job_environment(settings),
        external_workers=settings.retrain_workers == "external",
    )


def worker_config(
    settings: Settings, *, poll_s: float = 2.0, nice: int = 0, job_args: tuple[str, ...] = ()
) -> WorkerConfig:
    """`photobot worker`'s, with its command line's options: its jobs get the environment a bot gives
    its own (no token)."""
    return WorkerConfig(
        data_dir=Path(settings.data_dir),
        environment=job_environment(settings),
        lease_s=settings.retrain_lease_s,
        poll_s=poll_s,
        nice=nice,
        job_args=job_args,
        admin_ids=settings.admin_ids,
    )


def retrain_settings(settings: Settings) -> RetrainSettings:
    """What a retrain job needs of the settings (read, in the job's process, from `job_environment`)."""
    return RetrainSettings(
        data_dir=Path(settings.data_dir),
        database_path=settings.database,
        images_dir=settings.images_dir,
        models_dir=settings.models_dir,
        datasets=tuple(Path(p) for p in settings.datasets),
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        rules=ChatRules(
            max_per_user=settings.retrain_max_labels_per_user,
            max_share=settings.retrain_max_user_share,
            min_contributors=settings.retrain_min_contributors,
            max_pixels=settings.max_image_pixels,
        ),
        min_new_labels=settings.retrain_min_new_labels,
        gate_margin=settings.retrain_gate_margin,
    )


def job_environment(settings: Settings) -> dict[str, str]:
    """The job reads its settings from the environment: give it the bot's own, explicitly, and no secret.

    The job never talks to Telegram, so it gets no token: every variable named like a secret, or whose
    value holds the token, is left out, and TELEGRAM_BOT_TOKEN is set empty, because the job's own
    `Settings.from_env` would otherwise read it back from the `.env` of the directory it runs in.
    """
    token = settings.telegram_bot_token or ""
    env = {
        name: value
        for name, value in os.environ.items()
        if not SECRET_NAME.search(name) and not (token and token in value)
    }
    env.update(
        {
            "DATA_DIR": str(Path(settings.data_dir).resolve()),
            "DATABASE_URL": settings.database_url or "",
            "PHOTOBOT_DATASETS": os.pathsep.join(str(Path(p).resolve()) for p in settings.datasets),
            "KERAS_BACKEND": settings.keras_backend,
            "LOG_LEVEL": settings.log_level,
            "LOG_FORMAT": settings.log_format,
            "METRICS_PORT": "0",  # the bot's port is the bot's
            "MAX_IMAGE_BYTES": str(settings.max_image_bytes),
            "MAX_IMAGE_PIXELS": str(settings.max_image_pixels),
            "RETRAIN_MIN_NEW_LABELS": str(settings.retrain_min_new_labels),
            "RETRAIN_MAX_LABELS_PER_USER": str(settings.retrain_max_labels_per_user),
            "RETRAIN_MAX_USER_SHARE": str(settings.retrain_max_user_share),
            "RETRAIN_MIN_CONTRIBUTORS": str(settings.retrain_min_contributors),
            "RETRAIN_GATE_MARGIN": str(settings.retrain_gate_margin),
            "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "TELEGRAM_BOT_TOKEN": "",
        }
    )
    return env


def check_database(settings: Settings) -> None:
    """Connect to DATABASE_URL's database once (migrating it) and close it: a server that cannot be reached
    is one line (`storage.errors.DatabaseUnavailable`) before anything else starts. The SQLite file is
    opened with the bot's services, as before."""
    from storage.connect import open_database
    from storage.dialect import is_postgres_url

    if is_postgres_url(settings.database):
        open_database(settings.database).close()


def copies_remover(settings: Settings) -> Callable[[list[str]], object]:
    """What /forget deletes on this machine besides the photos: the copies retraining made of them."""
    return functools.partial(remove_photo_copies, Path(settings.data_dir))


async def open_store(settings: Settings) -> Store:
    """The database and this machine's image cache; a /forget on any machine reaches this one's copies
    of the photos within a cache sweep (`Store.apply_forgotten`)."""
    from storage import Store

    return await Store.open(settings.database, settings.images_dir, remove_copies=copies_remover(settings))


async def open_services(
    settings: Settings, *, names: Iterable[str] | None = None, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> Services:
    """The database, the image store and a started classifier serving `names` (default: all)."""
    store = await open_store(settings)
    classifier = build_photo_classifier(settings, catalogue=catalogue, names=names)
    try:
        await classifier.start()
    except BaseException:
        await store.close()
        raise
    registry = metrics_registry(settings)
    found = Services(
        config=bot_config(settings),
        retrain=retrain_config(settings),
        classifier=classifier,
        store=store,
        images=store.images,
        model_store=classifier.store,
        photo_limiter=FloodLimiter(settings.user_photos_per_minute, store, "photos"),
        update_limiter=FloodLimiter(settings.user_updates_per_minute, store, "updates"),
        catalogue=catalogue if names is None else catalogue.only(names),
        features=ArrivalFeatures(
            Path(settings.data_dir), settings.max_image_bytes, settings.max_image_pixels
        ),
        metrics=BotMetrics(registry),
    )
    found.refresh_labels()
    await found.refresh_taught()
    if registry is not None:
        try:
            await serve_metrics(settings, found, registry)
        except BaseException:
            await close_services(found)
            raise
    return found


def metrics_registry(settings: Settings) -> CollectorRegistry | None:
    """The registry a process's metrics go to when METRICS_PORT is set (None: nothing is recorded)."""
    from photobot.metrics import process_registry

    return process_registry() if settings.metrics_port else None


async def serve_process_metrics(
    settings: Settings, registry: CollectorRegistry | None
) -> Callable[[], Awaitable[None]]:
    """`registry` at http://METRICS_LISTEN:METRICS_PORT/metrics on the running loop (nothing without a
    registry); returns what stops it."""
    from photobot.metrics import MetricsServer

    if registry is None:
        return _nothing
    server = MetricsServer(registry, settings.metrics_listen, settings.metrics_port)
    await server.start()
    log.info("Prometheus metrics on %s", server.url)
    return server.close


async def _nothing() -> None:
    pass


async def serve_metrics(settings: Settings, found: Services, registry: CollectorRegistry) -> None:
    """The bot's figures and its classifier's (the engine's batches and queues in this process, the
    versions serving either way) at http://METRICS_LISTEN:METRICS_PORT/metrics, until the services close."""
    from inference.metrics import EngineCollector

    registry.register(EngineCollector(found.classifier.models, engine=settings.remote is None))
    found.closing.append(await serve_process_metrics(settings, registry))


def build_bot(
    settings: Settings, *, names: Iterable[str] | None = None, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> Application:
    """The whole bot from the settings: what `photobot run`, the playground and the tests start."""
    served = tuple(names) if names is not None else None

    async def services() -> Services:
        return await open_services(settings, names=served, catalogue=catalogue)

    return build_application(bot_config(settings), open_services=services, catalogue=catalogue)


def webhook_config(settings: Settings) -> WebhookConfig:
    """Where Telegram POSTs updates (WEBHOOK_URL and a path derived from the token: unguessable, stable
    across restarts, the same on every replica), the secret it sends, and the replica's own knobs."""
    if not settings.webhook_url:
        raise ValueError("WEBHOOK_URL is not set")
    digest = hashlib.sha256(f"photobot-webhook:{settings.telegram_bot_token or ''}".encode()).hexdigest()
    public = settings.webhook_url.rstrip("/")
    return WebhookConfig(
        url=f"{public}/telegram/{digest[:32]}",
        secret=settings.webhook_secret or digest[32:],
        public_url=public,
        listen=settings.webhook_listen,
        port=settings.webhook_port,
        max_connections=settings.webhook_max_connections,
        answer_within_s=settings.webhook_answer_within_s,
        lease_s=settings.webhook_lease_s,
    )


def playground_bot(
    settings: Settings, *, names: Iterable[str] | None = None
) -> Callable[[str, str, int], Application]:
    """How the playground builds the bot: these settings, pointed at its local Bot API server, with its
    admin added to ADMIN_IDS (polling, never a webhook)."""

    def build(token: str, api_url: str, admin_id: int) -> Application:
        local = dataclasses.replace(
            settings,
            telegram_bot_token=token,
            telegram_api_url=api_url,
            admin_ids=settings.admin_ids | {admin_id},
            webhook_url=None,
        )
        return build_bot(local, names=names)

    return build
