"""Wiring the inference engine from the settings: one place that maps Settings onto EngineConfig.

The bot and the command line build their Classifier here, so both serve the same way: the same
limits, the same model store, and the same seeding of shipped defaults (the flower default is a
trained head that `training.flower_model` assembles with the installed ImageNet backbone on first start).

`model_store(settings)` is the one place a process of the command line gets its model store: the
folders under DATA_DIR/models, or, with DATABASE_URL on PostgreSQL, versions and serving pointers
shared through the database with those folders as this machine's cache. (A retrain job builds the same
from its `RetrainSettings.model_store()`.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from inference.classifier import Classifier, Seeder, seed_model
from inference.engine import EngineConfig
from inference.model_store import ModelStore, ModelVersion
from inference.photo_classifier import PhotoClassifier
from photobot.settings import Settings


def engine_config(settings: Settings, **changes: Any) -> EngineConfig:
    """Settings.engine with single fields overridden by keyword arguments."""
    return dataclasses.replace(settings.engine, **changes)


def model_store(settings: Settings) -> ModelStore:
    """The settings' model store: shared through the database when DATABASE_URL names PostgreSQL."""
    from storage.model_registry import registry_for

    return ModelStore(settings.models_dir, registry=registry_for(settings.database))


def _seed_flowers(store: ModelStore) -> ModelVersion | None:
    from training.flower_model import seed_flower_model

    return seed_flower_model(store)


def _add_shipped_flowers(store: ModelStore) -> ModelVersion | None:
    from training.flower_model import add_shipped_flower_version

    return add_shipped_flower_version(store)


# The models whose shipped default is built rather than copied (the flowers: a head, assembled with the
# installed ImageNet backbone): how a fresh store is seeded, and how a store gets a newer default.
SEEDERS: dict[str, Seeder] = {"flowers": _seed_flowers}
SHIPPED_BUILDERS: dict[str, Seeder] = {"flowers": _add_shipped_flowers}


def add_shipped_version(store: ModelStore, name: str) -> ModelVersion | None:
    """This release's shipped default of a built-in model, stored as a new version that does not serve
    yet (None when the model ships none): how an existing store gets a newer default."""
    from inference.catalogue import DEFAULT_CATALOGUE
    from inference.seeding import add_shipped

    build = SHIPPED_BUILDERS.get(name)
    return build(store) if build else add_shipped(store, name, folder=DEFAULT_CATALOGUE[name].shipped)


# The models are chains of layers with nothing to run side by side, so one TensorFlow inter-op thread
# (ops run in the calling thread) saves the hand-offs. Read when TensorFlow starts, so it is set before
# the first model loads; TF_NUM_INTEROP_THREADS in the environment wins. Figures: docs/performance.md.
SERVING_TF_INTEROP_THREADS = "1"

# In the bot, one intra-op thread as well: its cores are taken by the decode processes and
# python-telegram-bot, and a second thread per op mostly spins. The engine alone (`photobot bench
# inference`, `photobot classify`) keeps one per core. TF_NUM_INTRAOP_THREADS in the environment wins.
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
    **changes: Any,
) -> Classifier:
    """A Classifier over the settings' model store (not started: `await classifier.start()`)."""
    use_serving_threads()
    return Classifier(
        model_store(settings),
        engine_config(settings, **changes),
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        catalogue=catalogue,
        names=names,
        seeders=SEEDERS,
    )


def seed_models(settings: Settings, names: Iterable[str] | None = None) -> ModelStore:
    """The settings' model store with every model in `names` (default: all) seeded as the bot would."""
    store = model_store(settings)
    catalogue = DEFAULT_CATALOGUE if names is None else DEFAULT_CATALOGUE.only(names)
    for spec in catalogue:
        seed_model(store, spec.name, SEEDERS.get(spec.name), folder=spec.shipped)
    return store


def build_photo_classifier(
    settings: Settings,
    *,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
    names: Iterable[str] | None = None,
) -> PhotoClassifier:
    """What the bot answers photos with: the Ray Serve application at INFERENCE_URL when it is set
    (`photobot serve inference`), else the engine in this process (the embedded default)."""
    remote = settings.remote
    if remote is None:
        return build_classifier(settings, catalogue=catalogue, names=names)
    from inference.remote.client import RemoteClassifier

    return RemoteClassifier(
        remote,
        model_store(settings),
        catalogue=catalogue,
        names=names,
        queue_size=settings.engine.queue_size,
        max_image_bytes=settings.max_image_bytes,
    )
