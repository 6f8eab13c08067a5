"""Model versions shared through PostgreSQL (DATABASE_URL): several processes, each with its own cache
folder, publish, promote and serve the same versions — on a real server, with real Keras models."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from inference.classifier import Classifier
from inference.engine import EngineConfig
from inference.errors import ModelUnavailable
from inference.model_store import FILES_RECORD, MODEL_FILE, ActiveVersionChanged, ModelStore
from inference.seeding import seed_model
from photobot.serving import model_store
from photobot.settings import Settings
from storage.model_registry import PostgresRegistry
from tests.support.models import add_version, digit_meta, digit_photo, load_mnist_subset


def shared(url: str, folder: Path) -> ModelStore:
    """A process's view: its own cache folder, the database's versions and pointers."""
    return ModelStore(folder, registry=PostgresRegistry(url))


@pytest.fixture
def stores(postgres_url, tmp_path):
    """Two machines' model stores on one database (each closed after the test)."""
    made = [shared(postgres_url, tmp_path / "one"), shared(postgres_url, tmp_path / "two")]
    yield made
    for store in made:
        store.close()


@pytest.fixture(scope="module")
def two_models(tiny_digit_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return (
        tiny_digit_model(folder / "a.keras", hidden=64, seed=0),
        tiny_digit_model(folder / "b.keras", hidden=32, seed=1),
    )


@pytest.fixture(scope="module")
def photos(mnist_path):
    _, _, x_test, _ = load_mnist_subset(mnist_path, n_test=12)
    return [digit_photo(x, seed=i) for i, x in enumerate(x_test)]


def _publish(store: ModelStore, content: bytes = b"weights", name: str = "digits", **meta) -> int:
    with store.new_version(name, {"labels": ["0", "1"], **meta}) as staged:
        (staged.path / MODEL_FILE).write_bytes(content)
        (staged.path / "head.npz").write_bytes(b"head " + content)
    return staged.published


def test_a_version_published_on_one_machine_is_fetched_into_anothers_cache(stores, tmp_path):
    one, two = stores
    assert _publish(one, b"first") == 1
    assert two.names() == ["digits"]
    listed = two.versions("digits")
    assert [v.version for v in listed] == [1] and not listed[0].path.exists()  # a listing fetches nothing
    fetched = two.get("digits", 1)
    assert fetched.path == tmp_path / "two" / "digits" / "v1"
    assert fetched.model_file.read_bytes() == b"first"
    assert (fetched.path / "head.npz").read_bytes() == b"head first"
    assert fetched.meta["sha256"] == {MODEL_FILE: hashlib.sha256(b"first").hexdigest()}
    assert fetched.meta["name"] == "digits" and fetched.meta["version"] == 1
    assert [p.name for p in (tmp_path / "two" / "digits").iterdir()] == ["v1"]  # no staging left
    assert two.active("digits") is None
    one.promote("digits", 1)
    assert two.active_version("digits") == 1 and two.active("digits").model_file.read_bytes() == b"first"


def test_promote_rollback_and_meta_updates_are_seen_by_every_store(stores):
    one, two = stores
    for content in (b"a", b"b", b"c"):
        _publish(one, content)
    one.promote("digits", 3)
    two.update_meta("digits", 2, status="rejected")
    assert one.get("digits", 2).meta["status"] == "rejected"
    assert two.rollback("digits").version == 1  # v2 was rejected
    assert one.active_version("digits") == 1
    with pytest.raises(ModelUnavailable):
        one.promote("digits", 9)
    assert two.active_version("digits") == 1


def test_two_publishers_racing_get_distinct_version_numbers(postgres_url, tmp_path):
    racers = [shared(postgres_url, tmp_path / f"machine{i}") for i in range(4)]
    numbers: list[int] = []
    start = threading.Barrier(len(racers))

    def publish_five(store: ModelStore, index: int) -> None:
        start.wait()
        numbers.extend(_publish(store, f"{index}-{n}".encode()) for n in range(5))

    threads = [threading.Thread(target=publish_five, args=(s, i)) for i, s in enumerate(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 21))
    assert [v.version for v in racers[0].versions("digits")] == list(range(1, 21))
    for store in racers:
        store.close()


def test_the_same_file_is_stored_once(stores, postgres_url):
    one, two = stores
    _publish(one, b"same")
    _publish(two, b"same")
    with psycopg.connect(postgres_url) as db:
        (blobs,) = db.execute("SELECT count(*) FROM model_blobs").fetchone()
    assert blobs == 2  # model.keras and head.npz, shared by both versions


def corrupt_blob(url: str, content: bytes) -> None:
    """Change the stored bytes of a model file behind the registry's back (a disk or a hand gone wrong)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "UPDATE model_blobs SET data = %s WHERE sha256 = %s",
            (content + b"!", hashlib.sha256(content).hexdigest()),
        )


def test_a_corrupted_blob_is_refused_and_nothing_is_cached(stores, postgres_url, tmp_path):
    one, two = stores
    _publish(one, b"good")
    corrupt_blob(postgres_url, b"good")
    with pytest.raises(ModelUnavailable, match="does not have the SHA-256 it was published with"):
        two.get("digits", 1)
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        two.promote("digits", 1)
    assert two.active_version("digits") is None
    assert list((tmp_path / "two" / "digits").iterdir()) == []


def test_a_files_only_stores_other_version_is_kept_aside_and_the_registered_one_fetched(stores, tmp_path):
    one, two = stores
    _publish(one, b"registered")
    local = tmp_path / "two" / "digits" / "v1"  # left by the files-only store used before DATABASE_URL
    local.mkdir(parents=True)
    (local / MODEL_FILE).write_bytes(b"an older, different v1")
    assert two.get("digits", 1).model_file.read_bytes() == b"registered"
    assert (local / FILES_RECORD).is_file()
    (kept,) = (tmp_path / "two" / "digits").glob(".replaced-v1-*")  # someone's only copy: never deleted
    assert (kept / MODEL_FILE).read_bytes() == b"an older, different v1"


def test_a_folder_holding_exactly_the_registered_files_is_used_without_fetching(stores, tmp_path):
    one, two = stores
    _publish(one, b"migrated")
    local = tmp_path / "two" / "digits" / "v1"  # as `photobot db migrate` leaves the install it copied
    local.mkdir(parents=True)
    (local / MODEL_FILE).write_bytes(b"migrated")
    (local / "head.npz").write_bytes(b"head migrated")
    before = (local / MODEL_FILE).stat().st_ino
    version = two.get("digits", 1)
    assert version.model_file.stat().st_ino == before
    assert version.meta["version"] == 1 and (local / FILES_RECORD).is_file()


def test_a_linked_cache_folder_is_refused(stores, tmp_path):
    one, two = stores
    _publish(one, b"registered")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "two" / "digits").mkdir(parents=True)
    (tmp_path / "two" / "digits" / "v1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelUnavailable, match="link or lies outside"):
        two.get("digits", 1)
    assert list(outside.iterdir()) == []


def test_only_one_of_several_starting_processes_seeds_a_fresh_deployment(
    postgres_url, tmp_path, digit_model_file
):
    shipped = tmp_path / "shipped"
    (shipped / "digits").mkdir(parents=True)
    (shipped / "digits" / MODEL_FILE).write_bytes(digit_model_file.read_bytes())
    (shipped / "digits" / "meta.json").write_text('{"labels": ["0", "1"]}')
    starting = [shared(postgres_url, tmp_path / f"machine{i}") for i in range(3)]
    start = threading.Barrier(len(starting))

    def seed(store: ModelStore) -> None:
        start.wait()
        seed_model(store, "digits", shipped_dir=shipped)

    threads = [threading.Thread(target=seed, args=(store,)) for store in starting]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [v.version for v in starting[0].versions("digits")] == [1]
    assert all(store.active_version("digits") == 1 for store in starting)
    for store in starting:
        store.close()


def test_the_composition_root_shares_the_store_only_with_postgresql(postgres_url, tmp_path):
    embedded = model_store(Settings(data_dir=tmp_path))
    assert embedded.registry is None and embedded.root == tmp_path / "models"
    cluster = model_store(Settings(data_dir=tmp_path, database_url=postgres_url))
    assert isinstance(cluster.registry, PostgresRegistry) and cluster.root == tmp_path / "models"
    cluster.close()


def cli(url: str, data_dir: Path, *args: str) -> str:
    """`photobot ARGS…` as another process on another machine would run it (its own DATA_DIR)."""
    env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(data_dir), "TELEGRAM_BOT_TOKEN": ""}
    done = subprocess.run(
        [sys.executable, "-m", "photobot", *args],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def wait_until_served(classifier: Classifier, version: int, deadline_s: float = 120.0) -> None:
    """Wait for the poller to switch (the deadline only bounds a failure; no timing is asserted)."""
    async with asyncio.timeout(deadline_s):
        while classifier.models()["digits"].version != version:
            await asyncio.sleep(0.05)


@pytest.mark.process
async def test_a_promotion_and_a_rollback_from_another_process_are_served_without_a_failed_request(
    postgres_url, tmp_path, two_models, photos
):
    store = shared(postgres_url, tmp_path / "bot")
    add_version(store, "digits", two_models[0], digit_meta())
    add_version(store, "digits", two_models[1], digit_meta(), promote=False)
    answers: list[int | None] = []
    errors: list[Exception] = []
    stop = asyncio.Event()

    async def caller(index: int) -> None:
        while not stop.is_set():
            try:
                answers.append((await classifier.classify(photos[index % len(photos)], "digit")).version)
            except Exception as error:  # any failure is what this test is about
                errors.append(error)
            index += 5

    config = EngineConfig(reload_poll_s=0.2, max_wait_ms=5.0, runtime="keras")
    async with Classifier(store, config, names=("digits",), shipped_dir=None) as classifier:
        callers = [asyncio.create_task(caller(n)) for n in range(4)]
        elsewhere = tmp_path / "cli"
        promoted = await asyncio.to_thread(cli, postgres_url, elsewhere, "models", "promote", "digits", "2")
        assert "v2 is now serving (was v1)" in promoted
        await wait_until_served(classifier, 2)
        rolled = await asyncio.to_thread(cli, postgres_url, elsewhere, "models", "rollback", "digits")
        assert "rolled back to v1 (was v2)" in rolled
        await wait_until_served(classifier, 1)
        # Up to one answer per caller was already on its way to v2 when the swap came; every photo
        # asked after it is v1's, so the last ten of twenty more are.
        served_after_rollback = len(answers)
        while len(answers) < served_after_rollback + 20:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*callers)
        swaps = classifier.models()["digits"].swaps
    store.close()
    assert errors == []
    assert swaps == 2
    assert {1, 2} <= set(answers) and set(answers[-10:]) == {1}
    assert (elsewhere / "models" / "digits" / "v2" / MODEL_FILE).is_file()  # the CLI checked it loads


async def test_a_promoted_version_whose_blob_is_corrupt_is_refused_and_the_old_one_keeps_serving(
    postgres_url, tmp_path, two_models, photos
):
    publisher = shared(postgres_url, tmp_path / "trainer")
    add_version(publisher, "digits", two_models[0], digit_meta())
    add_version(publisher, "digits", two_models[1], digit_meta(), promote=False)
    corrupt_blob(postgres_url, two_models[1].read_bytes())
    store = shared(postgres_url, tmp_path / "bot")
    config = EngineConfig(reload_poll_s=0.05, max_wait_ms=5.0, runtime="keras")
    async with Classifier(store, config, names=("digits",), shipped_dir=None) as classifier:
        publisher.registry.set_active("digits", 2)  # as a promote that skipped every check would
        async with asyncio.timeout(120):
            while 2 not in classifier.models()["digits"].refused:
                await asyncio.sleep(0.05)
        answer = await classifier.classify(photos[0], "digit")
    publisher.close()
    store.close()
    assert answer.version == 1
    assert not (tmp_path / "bot" / "digits" / "v2").exists()


def test_the_cold_cache_benchmark_fetches_the_serving_version_into_empty_folders(
    stores, postgres_url, tmp_path
):
    from benchmarks.promote import cold_fetch

    one, _ = stores
    one.promote("digits", _publish(one, b"x" * 100_000))
    fetched = cold_fetch(postgres_url, tmp_path / "bench", "digits", repeats=2)
    assert fetched.megabytes == pytest.approx(0.200_005, abs=1e-9)  # model.keras and head.npz
    assert len(fetched.get_s) == len(fetched.fetch_s) == 2 and min(fetched.get_s) > 0
    assert (tmp_path / "bench" / "cold1" / "digits" / "v1" / MODEL_FILE).read_bytes() == b"x" * 100_000


def test_a_rollback_asked_from_a_version_no_longer_serving_is_refused_on_every_machine(stores):
    """Two admins confirm different rollbacks at once on two bot replicas: each checked the serving
    version in its own process, both switched, and one was told of a version that did not serve."""
    one, two = stores
    for content in (b"first", b"second", b"third"):
        one.promote("digits", _publish(one, content))
    two.rollback("digits", 2, expected=3)  # one admin's, from v3
    with pytest.raises(ActiveVersionChanged) as refused:
        one.rollback("digits", 1, expected=3)  # the other's, also asked from v3: it changed meanwhile
    assert refused.value.current == 2 and one.active_version("digits") == 2


def test_a_rollback_asked_from_a_version_no_longer_serving_is_refused_in_a_local_store(tmp_path):
    store = ModelStore(tmp_path / "models")
    for content in (b"first", b"second", b"third"):
        store.promote("digits", _publish(store, content))
    store.rollback("digits", 2, expected=3)
    with pytest.raises(ActiveVersionChanged):
        store.rollback("digits", 1, expected=3)
    assert store.active_version("digits") == 2
    assert store.names() == ["digits"] and [v.version for v in store.versions("digits")] == [1, 2, 3]
