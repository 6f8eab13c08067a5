"""Photos reachable from every machine: the bytes are in the database, each machine's images folder is
a cache of them. "Another machine" is a second store on the same database with its own images folder;
each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import hashlib

import numpy as np
import pytest

from storage import Store, SyncStore, read_labelled_set
from tests.support.storage import execute, label_photo, png, predict, rows
from training.flower_data import BottleneckCache
from training.forget import bottleneck_root, remove_photo_copies


@pytest.fixture
async def machines(tmp_path, database):
    """Two stores on one database, each with its own (empty) images folder."""
    first = await Store.open(database, tmp_path / "first" / "images")
    second = await Store.open(database, tmp_path / "second" / "images")
    yield first, second
    await first.close()
    await second.close()


async def test_a_photo_stored_on_one_machine_is_read_on_another(machines, database):
    first, second = machines
    prediction_id = await predict(first, user_id=1, message_id=1, image=png(1))
    sha256 = (await first.get_prediction(prediction_id)).photo_sha256
    assert rows(database, "SELECT data FROM photo_bytes WHERE sha256 = ?", (sha256,)) == [(png(1),)]
    assert first.images.read(sha256) == png(1)  # written through to the first machine's cache
    assert not second.images.exists(sha256)

    assert await second.read_photo(sha256) == png(1)
    assert second.images.read(sha256) == png(1)  # now cached on the second machine too
    path = await second.photo_path(sha256)
    assert path == second.images.path(sha256) and path.read_bytes() == png(1)


async def test_photo_path_writes_the_file_from_the_database(machines):
    first, second = machines
    photo = await first.add_photo(png(2))
    path = await second.photo_path(photo.sha256)
    assert path is not None and path.read_bytes() == png(2)
    assert await second.photo_path("0" * 64) is None
    assert await second.read_photo("not a hash") is None


async def test_forget_removes_the_photo_for_every_machine(machines, database):
    first, second = machines
    prediction_id = await predict(first, user_id=3, message_id=1, image=png(3))
    sha256 = (await first.get_prediction(prediction_id)).photo_sha256
    assert await second.read_photo(sha256) == png(3)  # cached on both machines

    await first.forget(3)

    assert rows(database, "SELECT count(*) FROM photo_bytes") == [(0,)]  # in forget's own transaction
    assert not first.images.exists(sha256)
    # The second machine's copy is never used again: reads start from the rows...
    assert await second.read_photo(sha256) is None
    assert await second.photo_path(sha256) is None
    assert (await second.labelled_set("digits")).examples == ()
    # ...and its clean-up sweep deletes it.
    assert second.images.exists(sha256)
    assert await second.sweep_cache(min_age_s=0) == 1
    assert not second.images.exists(sha256)


async def test_the_periodic_sweep_deletes_a_copy_forgotten_elsewhere(tmp_path, database):
    first = await Store.open(database, tmp_path / "first" / "images")
    second = await Store.open(
        database, tmp_path / "second" / "images", orphan_min_age_s=0, cache_sweep_s=0.05
    )
    try:
        prediction_id = await predict(first, user_id=4, message_id=1, image=png(4))
        sha256 = (await first.get_prediction(prediction_id)).photo_sha256
        assert await second.read_photo(sha256) == png(4)
        await first.forget(4)
        for _ in range(400):  # the sweep runs every 50 ms; wait for it, not for a time
            if not second.images.exists(sha256):
                break
            await asyncio.sleep(0.05)
        assert not second.images.exists(sha256)
    finally:
        await first.close()
        await second.close()


async def test_the_labelled_set_works_from_an_empty_cache_on_another_machine(machines, tmp_path, database):
    first, second = machines
    for n, label in enumerate(["3", "4", "5", "3"]):
        await label_photo(first, user_id=10 + n, message_id=1, image=png(100 + n), true_label=label)

    labelled = await second.labelled_set("digits")

    assert len(labelled.examples) == 4 and labelled.missing_images == 0
    for example in labelled.examples:
        assert example.path.parent.parent == (tmp_path / "second" / "images").resolve()
        assert hashlib.sha256(example.path.read_bytes()).hexdigest() == example.sha256
    # A retraining job on a third machine, through the synchronous store and the export's reader.
    with SyncStore(database, tmp_path / "third" / "images") as job:
        assert [e.sha256 for e in job.labelled_set("digits").examples] == [
            e.sha256 for e in labelled.examples
        ]
    exported = read_labelled_set(database, tmp_path / "fourth" / "images", "digits")
    assert all(e.path.is_file() for e in exported.examples) and len(exported.examples) == 4


async def test_a_redelivered_photo_keeps_one_copy_of_its_bytes(machines, database):
    first, second = machines
    first_id = await predict(first, user_id=5, message_id=1, image=png(5))
    again = await predict(second, user_id=5, message_id=1, image=png(5))  # the update, on the other machine
    assert again == first_id
    assert rows(database, "SELECT count(*) FROM photo_bytes") == [(1,)]
    assert rows(database, "SELECT count(*) FROM predictions") == [(1,)]


async def test_a_damaged_cached_file_is_read_from_the_database_and_replaced(machines):
    first, _ = machines
    photo = await first.add_photo(png(6))
    first.images.path(photo.sha256).write_bytes(b"not the photo")
    assert await first.read_photo(photo.sha256) == png(6)
    assert first.images.read(photo.sha256) == png(6)


async def test_bytes_that_do_not_match_their_hash_are_never_cached(machines, database):
    first, second = machines
    photo = await first.add_photo(png(7))
    execute(database, "UPDATE photo_bytes SET data = ? WHERE sha256 = ?", (png(8), photo.sha256))
    assert await second.read_photo(photo.sha256) is None
    assert await second.photo_path(photo.sha256) is None
    assert not second.images.exists(photo.sha256)


async def test_photos_stored_before_the_bytes_were_kept_get_them_from_the_cache(tmp_path, database):
    """An install from before `photo_bytes`: photo rows whose only copy is a file on this machine."""
    store = await Store.open(database, tmp_path / "images")
    here = await store.add_photo(png(9))
    elsewhere = await store.add_photo(png(10))
    await store.close()
    execute(database, "DELETE FROM photo_bytes")
    (tmp_path / "images" / elsewhere.path).unlink()  # its file is on another machine

    store = await Store.open(database, tmp_path / "images")
    try:
        assert rows(database, "SELECT sha256 FROM photo_bytes") == [(here.sha256,)]
        assert await store.read_photo(here.sha256) == png(9)
        assert await store.read_photo(elsewhere.sha256) is None
    finally:
        await store.close()


async def test_a_forget_on_one_machine_reaches_the_copies_another_made(tmp_path, database):
    """The cached features (and report pictures) a machine made of a person's photos: a /forget on
    another machine left them there for good. The machine's sweep now deletes them too, and a machine
    that was down deletes them when it opens."""
    second_dir = tmp_path / "second"
    remove = functools.partial(remove_photo_copies, second_dir)
    first = await Store.open(database, tmp_path / "first" / "images")
    second = await Store.open(database, second_dir / "images", cache_sweep_s=0.05, remove_copies=remove)
    try:
        prediction_id = await predict(first, user_id=5, message_id=1, image=png(5))
        sha256 = (await first.get_prediction(prediction_id)).photo_sha256
        features = BottleneckCache(bottleneck_root(second_dir), "lite0")
        features.put(sha256, np.ones(8, np.float32))  # what a retrain on the second machine cached
        await first.forget(5)
        for _ in range(400):  # the sweep runs every 50 ms; wait for it, not for a time
            if features.get(sha256) is None:
                break
            await asyncio.sleep(0.05)
        assert features.get(sha256) is None
        await second.close()

        features.put(sha256, np.ones(8, np.float32))  # say, made while the forget was on its way
        second = await Store.open(database, second_dir / "images", cache_sweep_s=0, remove_copies=remove)
        assert features.get(sha256) is None  # a machine that opens catches up with every forget kept
    finally:
        await first.close()
        await second.close()
