"""Backbone features of a taught photo, computed once when it arrives (in the bot, in the background).

A photo captioned with a taught model's label is read as the retrain job reads it (the serving decoder,
the flowers' preprocessing) and its features, and those of its mirror image, go into the bottleneck
caches the job uses, keyed by the photo's SHA-256 (`training.flower_data.BottleneckCache`, where
/forget also finds them). `/retrain` is then a fit on cached features; the mirror image doubles what a
dozen photos teach the head and the refusal, while serving still reads each photo once. One background
thread, the backbone loaded at the first photo: a bot nobody teaches pays nothing, and answering
photos never waits for this.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MIRRORED = "-mirrored"  # the mirror images' cache folder: the photos' own key with this after it


def taught_features(
    items: list[Any], root: Path, extract: Any, progress: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1280) features of these photos (`training.flower_data.Pixels`) and (N, 1280) of their mirror
    images, from the caches under `root` or computed with `extract` and cached."""
    from training.flower_data import BottleneckCache, Pixels, bottlenecks
    from training.train_flowers import cache_key

    mirrors = [Pixels(p.digest, np.ascontiguousarray(p.pixels[:, ::-1]), p.source) for p in items]
    plain = bottlenecks(items, BottleneckCache(root, cache_key()), extract, progress=progress)
    mirrored = bottlenecks(mirrors, BottleneckCache(root, cache_key() + MIRRORED), extract, progress=progress)
    return plain.features, mirrored.features


class ArrivalFeatures:
    """`note(sha256, path)` schedules one photo; `drain()` waits for what is scheduled; `close()`."""

    def __init__(self, data_dir: Path, max_bytes: int, max_pixels: int) -> None:
        self.root = Path(data_dir) / "cache" / "bottlenecks"
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="photobot-features")
        self._pending: set[asyncio.Future[None]] = set()
        self._extract: Any = None

    def note(self, sha256: str, path: Path) -> None:
        """Compute the photo's features in the background (nothing if they are cached already)."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._compute, sha256, path)
        self._pending.add(future)
        future.add_done_callback(self._done)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        self._executor.shutdown(wait=True)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            # The job computes what is missing: a failure here costs time, never a photo.
            log.warning("features of a taught photo not cached: %s", future.exception())

    def _compute(self, sha256: str, path: Path) -> None:
        from inference.decode import decode_image
        from inference.flowers import RESIZE_SHORTER, flower_input
        from training.flower_data import Pixels

        if self._extract is None:
            self._load()
        image = decode_image(
            path.read_bytes(),
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            target_size=RESIZE_SHORTER,
            grayscale=False,
        )
        taught_features([Pixels.of_photo(sha256, flower_input(image), path)], self.root, self._extract)

    def _load(self) -> None:
        from training.effnet_lite0 import build_backbone

        self._extract = build_backbone().predict_on_batch
