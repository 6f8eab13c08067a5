"""The model poller (`Classifier.follow_store`, every ENGINE_RELOAD_POLL_S): it keeps following the store
while models are taught or deleted under it, and says once when the store cannot be read and once when
it can again — on real model stores, a real PostgreSQL database taken offline and back."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from inference.classifier import Classifier
from inference.engine import EngineConfig
from inference.model_store import ModelStore
from storage.model_registry import PostgresRegistry
from tests.support.models import add_version, digit_meta

CONFIG = EngineConfig(reload_poll_s=0, max_wait_ms=5.0, runtime="keras")  # each test calls follow_store


@pytest.mark.parametrize("change", ["taught", "deleted"])
async def test_a_model_taught_or_deleted_while_the_poller_reads_the_store_leaves_it_following(
    tmp_path, tiny_digit_model, change
):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", tiny_digit_model(tmp_path / "a.keras", hidden=64, seed=0), digit_meta())
    second = add_version(
        store,
        "digits",
        tiny_digit_model(tmp_path / "b.keras", hidden=32, seed=1),
        digit_meta(),
        promote=False,
    )
    names = ("digits", "flowers") if change == "deleted" else ("digits",)
    async with Classifier(store, CONFIG, names=names, shipped_dir=None) as classifier:
        following = asyncio.create_task(classifier.follow_store())
        await asyncio.sleep(0)  # it is reading the first model's pointer, in a thread
        if change == "taught":  # as /newmodel does (bot.services)
            await classifier.add_model(classifier.catalogue["flowers"])
        else:  # as /delmodel does
            await classifier.remove_model("flowers")
        await following  # raised "dictionary changed size during iteration", which ended the poller
        store.promote("digits", second.version)
        await classifier.follow_store()
        assert classifier.models()["digits"].version == second.version
        assert ("flowers" in classifier.models()) == (change == "taught")


def _allow_connections(server_url: str, database: str, allow: bool) -> None:
    """Take `database` offline (its connections cut, no new ones) or back online."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )


async def _outage(server_url: str, database_url: str, follow, caplog) -> tuple[list, list]:
    """The warnings of three polls while the database is offline, then of two once it is back."""
    database = database_url.rsplit("/", 1)[1]
    caplog.set_level(logging.INFO)
    try:
        caplog.clear()
        _allow_connections(server_url, database, allow=False)
        for _ in range(3):
            await follow()
        down = _warnings(caplog)
        caplog.clear()
        _allow_connections(server_url, database, allow=True)
        for _ in range(2):
            await follow()
        back = _warnings(caplog)
    finally:
        _allow_connections(server_url, database, allow=True)
    return down, back


def _warnings(caplog) -> list:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("inference")]


def _said_once(down: list, back: list, where: str = "") -> None:
    assert [r.levelname for r in down] == ["WARNING"]
    assert down[0].getMessage().startswith(f"{where}the model store cannot be read (")
    assert down[0].exc_info is None and "\n" not in down[0].getMessage()
    assert [r.getMessage() for r in back] == [f"{where}the model store can be read again"]


async def test_a_database_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    postgres_server, postgres_url, tmp_path, tiny_digit_model, caplog
):
    store = ModelStore(tmp_path / "cache", registry=PostgresRegistry(postgres_url, timeout_s=2.0))
    add_version(store, "digits", tiny_digit_model(tmp_path / "a.keras"), digit_meta())
    try:
        async with Classifier(store, CONFIG, names=("digits",), shipped_dir=None) as classifier:
            down, back = await _outage(postgres_server.url(), postgres_url, classifier.follow_store, caplog)
            assert classifier.models()["digits"].version == 1  # what was loaded kept serving
    finally:
        store.close()
    _said_once(down, back)


async def test_a_ray_serve_replica_logs_a_database_outage_once_too(
    postgres_server, postgres_url, tmp_path, tiny_digit_model, caplog
):
    from inference.catalogue import DEFAULT_CATALOGUE
    from inference.remote.config import ServeConfig
    from inference.remote.serve_app import ModelServer

    store = ModelStore(tmp_path / "cache", registry=PostgresRegistry(postgres_url, timeout_s=2.0))
    add_version(store, "digits", tiny_digit_model(tmp_path / "a.keras"), digit_meta())
    try:
        replica = ModelServer("digits", lambda: store, DEFAULT_CATALOGUE, CONFIG, ServeConfig())

        async def follow() -> None:
            await asyncio.to_thread(replica.follow_store)  # as its polling thread does

        down, back = await _outage(postgres_server.url(), postgres_url, follow, caplog)
        assert replica.describe()[1].version == 1  # what was loaded kept serving
    finally:
        store.close()
    _said_once(down, back, "digits: ")
