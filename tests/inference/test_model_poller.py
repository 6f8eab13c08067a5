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


@pytest.fixture(scope="module")
def two_models(tiny_digit_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return (
        tiny_digit_model(folder / "a.keras", hidden=64, seed=0),
        tiny_digit_model(folder / "b.keras", hidden=32, seed=1),
    )


@pytest.mark.parametrize("change", ["taught", "deleted"])
async def test_a_model_taught_or_deleted_while_the_poller_reads_the_store_leaves_it_following(
    tmp_path, two_models, change
):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", two_models[0], digit_meta())
    second = add_version(store, "digits", two_models[1], digit_meta(), promote=False)
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


async def test_a_database_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    postgres_server, postgres_url, tmp_path, two_models, caplog
):
    store = ModelStore(tmp_path / "cache", registry=PostgresRegistry(postgres_url, timeout_s=2.0))
    add_version(store, "digits", two_models[0], digit_meta())
    database = postgres_url.rsplit("/", 1)[1]
    caplog.set_level(logging.INFO, logger="inference.classifier")
    try:
        async with Classifier(store, CONFIG, names=("digits",), shipped_dir=None) as classifier:
            caplog.clear()
            _allow_connections(postgres_server.url(), database, allow=False)
            for _ in range(3):  # three polls while the database is down
                await classifier.follow_store()
            down = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert [r.levelname for r in down] == ["WARNING"]
            assert "the model store cannot be read" in down[0].getMessage()
            assert down[0].exc_info is None and "\n" not in down[0].getMessage()
            assert classifier.models()["digits"].version == 1  # what was loaded keeps serving

            caplog.clear()
            _allow_connections(postgres_server.url(), database, allow=True)
            for _ in range(2):
                await classifier.follow_store()
            back = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert [r.getMessage() for r in back] == ["the model store can be read again"]
    finally:
        _allow_connections(postgres_server.url(), database, allow=True)
        store.close()
