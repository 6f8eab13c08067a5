"""Near-duplicate photos count once: the same picture re-encoded, resized or re-sent is one example.

Without this, one account can send one photo fifty times as fifty JPEG qualities (fifty different
SHA-256s) and have it count fifty times. Two photos are the same picture when
1. their 64-bit difference hashes (`difference_hash`: an 8×9 grayscale thumbnail, one bit per
   left-right step) differ in at most `MAX_HASH_DISTANCE` bits, and
2. their 12×12 grayscale thumbnails, standardised (mean 0, standard deviation 1), differ by at most
   `MAX_PIXEL_DIFFERENCE` at every pixel.
The hash alone is not enough: it sees mostly the lighting, and measured on the rendered digit photos
the tests use, different digits on the same paper had a distance of 0. The thumbnail check tells them
apart. Measured on 160 rendered digit photos and 210 real flower photos: the same photo re-encoded at
JPEG quality 60 or 80, as PNG, or resized to 90% or 50%: ≤ 0.31; different digit photos ≥ 1.1;
different flower photos ≥ 1.5, two shots of one scene a moment apart 0.8 and 1.05 (kept apart); the
flower set's own copies (one also in grayscale) 0.02 and 0.2 (collapsed).

Of a group of near-duplicates the one with the most people behind its label is kept, then the earliest
labelled (so a copy sent later with another label cannot push out the photo it copies); the others are
left out and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from storage.labelled import LabelledExample

log = logging.getLogger(__name__)

MAX_HASH_DISTANCE = 8  # of 64 bits (measured: re-encoded or resized copies ≤ 3)
MAX_PIXEL_DIFFERENCE = 0.6  # in standard deviations of the thumbnail (copies ≤ 0.31, others ≥ 1.1)
THUMBNAIL = 12
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_DRAFT = (192, 192)  # JPEG: decode at a reduced size of at least this (fast even for 48 MP photos)


class UnreadablePhoto(Exception):
    """A stored photo that cannot be fingerprinted (not an image, too large, truncated)."""


@dataclass(frozen=True)
class Fingerprint:
    hash: int  # 64-bit difference hash
    thumbnail: np.ndarray  # (THUMBNAIL, THUMBNAIL) float32, standardised

    def same_picture(self, other: Fingerprint) -> bool:
        if (self.hash ^ other.hash).bit_count() > MAX_HASH_DISTANCE:
            return False
        return float(np.abs(self.thumbnail - other.thumbnail).max()) <= MAX_PIXEL_DIFFERENCE


@dataclass(frozen=True)
class Deduplicated:
    kept: list[LabelledExample]  # in the order given
    duplicates: int  # photos left out as near-duplicates of a kept one
    unreadable: int  # photos that could not be read to compare (left out too)


def fingerprint(path: Path, max_pixels: int) -> Fingerprint:
    """The photo's difference hash and standardised thumbnail; UnreadablePhoto if it cannot be read."""
    try:
        with Image.open(path, formats=_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UnreadablePhoto(f"{width}×{height} is more than {max_pixels} pixels")
            image.draft("L", _DRAFT)
            gray = image.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadablePhoto(str(error)) from error
    return Fingerprint(difference_hash(gray), _thumbnail(gray))


def difference_hash(gray: Image.Image) -> int:
    """64 bits: is each pixel of an 8×9 thumbnail brighter than its left neighbour?"""
    pixels = np.asarray(gray.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _thumbnail(gray: Image.Image) -> np.ndarray:
    pixels = np.asarray(gray.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), dtype=np.float32)
    return (pixels - pixels.mean()) / (pixels.std() + 1e-6)


def collapse_near_duplicates(examples: Sequence[LabelledExample], max_pixels: int) -> Deduplicated:
    """Keep one photo of each group of near-duplicates (most votes, then earliest); count the rest."""
    ranked = sorted(examples, key=lambda e: (-e.votes, e.labelled_at, e.sha256))
    kept_hashes = np.zeros(len(ranked), np.uint64)
    kept_prints: list[Fingerprint] = []
    keep: set[str] = set()
    duplicates = unreadable = 0
    for example in ranked:
        try:
            found = fingerprint(example.path, max_pixels)
        except UnreadablePhoto as error:
            log.warning("chat photo %s cannot be read to compare: %s", example.sha256[:12], error)
            unreadable += 1
            continue
        distances = np.bitwise_count(kept_hashes[: len(kept_prints)] ^ np.uint64(found.hash))
        close = np.flatnonzero(distances <= MAX_HASH_DISTANCE)
        if any(found.same_picture(kept_prints[i]) for i in close):
            duplicates += 1
            continue
        keep.add(example.sha256)
        kept_hashes[len(kept_prints)] = found.hash
        kept_prints.append(found)
    return Deduplicated([e for e in examples if e.sha256 in keep], duplicates, unreadable)
