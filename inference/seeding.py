"""Seeding an empty model store with the shipped defaults, so a fresh install answers without training."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from inference.model_store import META_FILE, MODEL_FILE, ModelStore, ModelVersion

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "shipped"

Seeder = Callable[[ModelStore], ModelVersion | None]


def seed_model(
    store: ModelStore,
    name: str,
    seeder: Seeder | None = None,
    shipped_dir: Path | None = SHIPPED_DIR,
    folder: str | None = None,
) -> None:
    """Give an empty store the shipped default, so a fresh install answers without training; a store
    with versions but none active gets its latest usable version promoted. Every command that serves
    a model calls this (through the Classifier or directly), so all of them work on a fresh install.
    With a shared store, processes starting at once take turns: one seeds, the others see its version."""
    with store.exclusive(name):
        _seed_model(store, name, seeder, shipped_dir, folder)


def _seed_model(
    store: ModelStore, name: str, seeder: Seeder | None, shipped_dir: Path | None, folder: str | None
) -> None:
    if store.versions(name):
        if store.active_version(name) is None:
            usable = [v for v in store.versions(name) if v.meta.get("status") != "rejected"]
            if usable:
                log.warning("%s has no active version; promoting the latest, v%d", name, usable[-1].version)
                store.promote(name, usable[-1].version)
        return
    try:
        seeded = seeder(store) if seeder else seed_shipped(store, name, shipped_dir, folder=folder)
    except Exception:
        log.exception("%s: seeding the shipped default failed", name)
        return
    if seeded is not None:
        log.info("%s: seeded the store with the shipped default as v%d", name, seeded.version)


def seed_shipped(
    store: ModelStore, name: str, shipped_dir: Path | None = SHIPPED_DIR, *, folder: str | None = None
) -> ModelVersion | None:
    """Copy `shipped_dir/<folder>/` (model.keras + meta.json; `folder` defaults to `name`) into the
    store as a new, active version."""
    version = add_shipped(store, name, shipped_dir, folder=folder)
    return None if version is None else store.promote(name, version.version)


def add_shipped(
    store: ModelStore, name: str, shipped_dir: Path | None = SHIPPED_DIR, *, folder: str | None = None
) -> ModelVersion | None:
    """Copy `shipped_dir/<folder>/` into the store as a new version, not serving: how a store that
    already has versions gets a newer release's default (`photobot models add-shipped`)."""
    if shipped_dir is None:
        return None
    source = Path(shipped_dir) / (folder or name)
    if not (source / MODEL_FILE).is_file() or not (source / META_FILE).is_file():
        log.warning("%s: no shipped default in %s; train one with `photobot train %s`", name, source, name)
        return None
    import json

    meta = json.loads((source / META_FILE).read_text(encoding="utf-8"))
    meta = {k: v for k, v in meta.items() if k not in ("name", "version")}
    meta.setdefault("source", f"shipped default ({source.name})")
    return store.add_version(name, source, meta)
