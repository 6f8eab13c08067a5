"""The `Store` calls about photo bytes and this machine's cache of them (see `storage.photo_bytes`).

The bytes of every photo are in the database; the images folder is this process's cache. Reads start
from the rows (`read_photo`, `photo_path`), so a cached copy of a forgotten photo is never used, and the
clean-up sweep (`sweep_cache`, at open and then every `cache_sweep_s`) deletes cached files whose row is
gone: a /forget on another machine reaches this one's cache within a sweep; so it reaches the copies this
machine made of the photos (`apply_forgotten`). Photos stored before their
bytes were kept in the database get them from this cache when a store opens (`_backfill_photo_bytes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from storage import photo_bytes, sql
from storage.dialect import Connection
from storage.group_commit import GroupCommit
from storage.images import ImageStore, sha256_hex

log = logging.getLogger(__name__)

BACKFILL_BATCH = 50  # photos per transaction when old photos get their bytes row


class PhotoCalls(GroupCommit):
    """Photo bytes and the cache, over `GroupCommit`'s reads and writes; `Store` sets `images`."""

    images: ImageStore
    _sweeper: asyncio.Task[None] | None = None
    # What this machine made of photos outside the store (cached features, report pictures: handed in
    # by whoever opens it), deleted when a /forget on any machine removes the photos.
    _remove_copies: Callable[[list[str]], object] | None = None
    _forgotten_seen = 0  # the last `forgotten_photos` row applied here

    async def apply_forgotten(self) -> int:
        """Delete this machine's copies of the photos forgotten since the last look, on this machine or
        another (at open, then with every cache sweep); return how many photos were looked for."""
        if self._remove_copies is None:
            return 0
        last, sha256s = await self._read(functools.partial(sql.forgotten_after, after=self._forgotten_seen))
        if sha256s:
            await asyncio.to_thread(self._remove_copies, sha256s)
        self._forgotten_seen = last
        return len(sha256s)

    async def read_photo(self, sha256: str) -> bytes | None:
        """A stored photo's bytes (from the cache, or the database when this machine has no intact
        copy); None when no photo row has that hash (never stored, or forgotten)."""
        return await self._read(functools.partial(photo_bytes.read_photo, images=self.images, sha256=sha256))

    async def photo_path(self, sha256: str) -> Path | None:
        """The cached file of a stored photo, written from the database when this machine lacks it;
        None when no photo row has that hash."""
        return await self._read(functools.partial(photo_bytes.cached_path, images=self.images, sha256=sha256))

    async def sweep_cache(self, min_age_s: float) -> int:
        """Delete cached files, older than `min_age_s`, whose photo row is gone; return how many.

        Which rows exist is read without the write lock; the few files found rowless are checked again
        and deleted under it, as a /forget's are, so a photo stored again meanwhile keeps its file.
        Younger files may be a photo whose row is being written.
        """
        candidates = await asyncio.to_thread(self.images.older_than, min_age_s)
        if not candidates:
            return 0
        kept = await self._read(functools.partial(photo_bytes.existing_photos, sha256s=candidates))
        rowless = [sha256 for sha256 in candidates if sha256 not in kept]
        if not rowless:
            return 0
        removed = await self._write(
            functools.partial(_delete_unreferenced_images, images=self.images, sha256s=rowless)
        )
        if removed:
            log.info(
                "removed %d cached photos that no photo row refers to (forgotten, or left by a crash)",
                removed,
            )
        return removed

    def _start_sweeping(self, every_s: float, min_age_s: float) -> None:
        if every_s > 0:
            self._sweeper = asyncio.create_task(
                self._sweep_every(every_s, min_age_s), name="storage-cache-sweep"
            )

    async def _stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_every(self, every_s: float, min_age_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep_cache(min_age_s)
                await self.apply_forgotten()
            except Exception:  # the next sweep tries again; the bot goes on
                log.exception("sweeping the photo cache failed")

    async def _backfill_photo_bytes(self) -> int:
        """Photos stored before their bytes were kept in the database get them from this machine's cache.

        A photo whose file is not here (stored on another machine) is left for that machine's next start.
        """
        stored, absent, after = 0, 0, ""
        while True:
            batch = await self._read(
                functools.partial(photo_bytes.photos_without_bytes, after=after, limit=BACKFILL_BATCH)
            )
            if not batch:
                break
            after = batch[-1]
            found = await asyncio.to_thread(_read_intact, self.images, batch)
            absent += len(batch) - len(found)
            if found:
                stored += sum(await self._write(functools.partial(_store_found_bytes, found=found)))
        if stored:
            log.info(
                "%d photos stored before their bytes were kept in the database got them from %s",
                stored,
                self.images.root,
            )
        if absent:
            log.warning(
                "%d photos have no bytes in the database and no intact file in %s: start PhotoBot where "
                "their files are to store them",
                absent,
                self.images.root,
            )
        return stored

    # ------------------------------------------------------------ this machine's cached files

    async def _remove_images(self, sha256s: list[str]) -> None:
        for sha256 in sha256s:
            await self._write(functools.partial(_delete_image_if_unused, images=self.images, sha256=sha256))

    async def _finish_pending_image_deletions(self) -> None:
        """A /forget that crashed after its commit still has files queued: remove them now."""
        pending = await self._read(sql.pending_image_deletions)
        if pending:
            log.info("removing %d images queued by an interrupted /forget", len(pending))
            await self._remove_images(pending)


def _read_intact(images: ImageStore, sha256s: list[str]) -> dict[str, bytes]:
    found = {}
    for sha256 in sha256s:
        if images.exists(sha256):
            data = images.read(sha256)
            if sha256_hex(data) == sha256:
                found[sha256] = data
    return found


def _store_found_bytes(db: Connection, *, found: dict[str, bytes]) -> list[bool]:
    return [photo_bytes.store_bytes_if_photo(db, sha256, data) for sha256, data in found.items()]


def _delete_image_if_unused(db: Connection, *, images: ImageStore, sha256: str) -> bool:
    if sql.claim_image_deletion(db, sha256):
        return images.delete(sha256)
    return False


def _delete_unreferenced_images(db: Connection, *, images: ImageStore, sha256s: list[str]) -> int:
    """Under the write lock: a photo row written later finds no file and is cached again when read."""
    removed = 0
    for sha256 in sha256s:
        if sql.get_photo(db, sha256) is None:
            removed += images.delete(sha256)
    return removed
