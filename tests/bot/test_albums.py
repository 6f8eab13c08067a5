"""An album's caption: its first photo's, for the photos after it that have none of their own."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.albums import Albums
from tests.support.storage import open_store


async def test_the_first_photo_s_caption_is_the_album_s() -> None:
    albums = Albums()
    albums.note(1, "g", 10, "dog")
    albums.note(1, "g", 11, None)
    albums.note(1, "g", 12, "cat")  # a later photo's caption is its own
    assert await albums.caption(1, "g", 11) == "dog"
    assert await albums.caption(2, "g", 11) is None  # another chat's album of the same id
    assert await albums.caption(1, "h", 11) is None  # a photo of no album seen here


async def test_a_caption_on_a_later_photo_is_not_taken_by_the_photos_around_it() -> None:
    albums = Albums(wait_s=0.05)
    albums.note(1, "g", 10, None)
    albums.note(1, "g", 11, "dog")
    albums.note(1, "g", 12, None)
    assert await albums.caption(1, "g", 10) is None
    assert await albums.caption(1, "g", 12) is None


async def test_a_photo_seen_before_its_album_s_first_waits_for_it() -> None:
    albums = Albums(wait_s=5.0)
    albums.note(1, "g", 11, None)
    waiting = asyncio.ensure_future(albums.caption(1, "g", 11))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    albums.note(1, "g", 10, "dog")
    assert await asyncio.wait_for(waiting, 1.0) == "dog"


async def test_the_first_photo_without_a_caption_waits_a_moment_only() -> None:
    albums = Albums(wait_s=0.1)
    albums.note(1, "g", 10, None)
    assert await asyncio.wait_for(albums.caption(1, "g", 10), 5.0) is None


async def test_old_albums_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    albums = Albums()
    albums.note(1, "g", 10, "dog")
    later = time.monotonic() + 3600
    monkeypatch.setattr("bot.albums.time.monotonic", lambda: later)
    albums.note(1, "h", 20, None)
    albums.note(1, "g", 11, None)  # album g starts again: its first photo is gone
    albums.wait_s = 0
    assert await albums.caption(1, "g", 11) is None
    assert albums._albums.keys() == {(1, "h"), (1, "g")} and min(albums._albums[(1, "g")].photos) == 11


async def test_replicas_sharing_a_database_find_the_first_photo_of_an_album_spread_over_them(
    tmp_path,
) -> None:
    store = await open_store(tmp_path)
    try:
        first, second = Albums(records=store, wait_s=5.0), Albums(records=store, wait_s=5.0)
        second.note(1, "g", 11, None)  # the album's second photo reaches a replica first
        await second.share(1, "g", 11, 7, None)
        waiting = asyncio.ensure_future(second.caption(1, "g", 11))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        first.note(1, "g", 10, "dog")  # its first photo, with the caption, reaches the other one
        await first.share(1, "g", 10, 7, "dog")
        assert await asyncio.wait_for(waiting, 2.0) == "dog"

        third = Albums(records=store, wait_s=0.05)  # a photo of another album, whose first has none
        third.note(1, "h", 21, None)
        await store.note_album_photo(1, "h", 20, 7, None)
        assert await third.caption(1, "h", 21) is None
    finally:
        await store.close()
