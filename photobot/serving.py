"""Wiring the inference engine from the settings: one place that maps Settings onto EngineConfig.

The bot and the command line build their Classifier here, so both serve the same way: the same
limits, the same model store, and the same seeding of shipped defaults (the flower default is a
trained head that `training.flower_model` assembles with the installed ImageNet backbone on first start).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from inference.classifier import Classifier, Seeder
from inference.engine import EngineConfig
from inference.model_store import ModelStore, ModelVersion
from photobot.settings import Settings


def engine_config(settings: Settings, **changes: object) -> EngineConfig:
    """Settings.engine as the engine's config; keyword arguments override single fields."""
    limits = settings.engine
    values = {
        "max_batch": limits.max_batch,
        "max_wait_ms": limits.max_wait_ms,
        "queue_size": limits.queue_size,
        "deadline_s": limits.deadline_s,
        "workers": limits.workers,
        "reload_poll_s": limits.reload_poll_s,
        "pool": limits.pool,
        "runtime": limits.runtime,
        **changes,
    }
    return EngineConfig(**values)  # type: ignore[arg-type]


def _seed_flowers(store: ModelStore) -> ModelVersion | None:
    from training.flower_model import seed_flower_model

    return seed_flower_model(store)


SEEDERS: dict[str, Seeder] = {"flowers": _seed_flowers}


# TensorFlow runs a graph's ops on an inter-op thread pool; the models here are chains of layers with
# nothing to run side by side, so one inter-op thread (ops in the calling thread; each op's own
# intra-op parallelism unchanged) saves the hand-offs. Measured on the 2-core machine, three runs
# each: digits at 8 callers 215 vs 202 photos/s (p95 49 vs 52 ms); flowers the same at 64 callers
# and 41.5 vs 36.4 photos/s at 1. Read when TensorFlow starts, so set before the first model loads;
# TF_NUM_INTEROP_THREADS in the environment overrides it.
SERVING_TF_INTEROP_THREADS = "1"

# In the bot, one intra-op thread as well. The bot's cores are already taken by the decode processes
# and python-telegram-bot, so a second thread per op mostly waits for work, spinning: TensorFlow's
# threads used ~6 ms of CPU per digit photo for a ~2.5 ms model. `photobot bench bot` (10 users, three
# alternating pairs): digits 64.0 / 66.9 / 62.1 photos/s against 62.8 / 54.6 / 58.1 with one thread
# per core, 23–24 against 25–28 ms of bot CPU per photo; flowers 38.1 / 32.5 / 39.5 against 38.0 /
# 36.1 / 36.8 photos/s at 39–44 against 46–48 ms. The engine alone (`photobot bench inference`,
# `photobot classify`) keeps TensorFlow's default, one per core: with the cores to itself the flower
# model runs 15–25% faster at 64 callers with two. TF_NUM_INTRAOP_THREADS overrides it.
BOT_TF_INTRAOP_THREADS = "1"


def use_serving_threads(*, in_bot: bool = False) -> None:
    """Ask TensorFlow for the serving thread layout (above); a no-op once TensorFlow has started."""
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", SERVING_TF_INTEROP_THREADS)
    if in_bot:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", BOT_TF_INTRAOP_THREADS)


def build_classifier(
    settings: Settings,
    *,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
    names: Iterable[str] | None = None,
    **changes: object,
) -> Classifier:
    """A Classifier over the settings' model store (not started: `await classifier.start()`)."""
    use_serving_threads()
    return Classifier(
        ModelStore(settings.models_dir),
        engine_config(settings, **changes),
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        catalogue=catalogue,
        names=names,
        seeders=SEEDERS,
    )
