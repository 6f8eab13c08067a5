"""The labelled flower photos: where they are, how they split, and their cached backbone features.

- Location: `flower_photos/` (or a catalogue model's own `dataset` folder) in the PHOTOBOT_DATASETS
  folders, then `$DATA_DIR/datasets/`. Nothing is downloaded at run time: a missing folder is a clear
  error that names the variable and the public source of `flower_photos.tgz`.
- Labels are folder names, so any folder of labelled photos trains the same way.
- Split by a stable hash of each photo's *content* (as `retrain.py` does with names): a photo keeps its
  split forever, whatever other photos arrive or leave.
- Bottleneck cache: one `.npy` per photo content hash under a folder named by the backbone and the
  preprocessing, so each photo's features are computed once and reused by every later run. Chat
  photos are cached under the SHA-256 the image store knows them by, so /forget can delete them
  (`forget_bottlenecks`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from inference.flowers import flower_input

log = logging.getLogger(__name__)

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
FOLDER = "flower_photos"
PUBLIC_SOURCES = {FOLDER: FLOWERS_URL}  # where a missing dataset folder can be fetched from, by hand
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
MIN_PHOTOS_PER_CLASS = 20
Split = Literal["train", "validation", "test"]


class DatasetError(ValueError):
    """The photos cannot be used for training; the message says why and what to do."""


@dataclass(frozen=True)
class Photo:
    path: Path
    label: str
    digest: str  # SHA-256 of the file's bytes


@dataclass
class PhotoSet:
    root: Path
    classes: list[str]
    photos: list[Photo]
    dropped: Counter = field(default_factory=Counter)  # reason → count, never silent

    def counts(self) -> dict[str, int]:
        found = Counter(p.label for p in self.photos)
        return {c: found[c] for c in self.classes}


def find_flower_photos(datasets: Sequence[Path], data_dir: Path) -> Path:
    """The `flower_photos/` folder: the PHOTOBOT_DATASETS folders first, then `$DATA_DIR/datasets`."""
    return find_photo_folder(datasets, data_dir, FOLDER)


def find_photo_folder(datasets: Sequence[Path], data_dir: Path, folder: str) -> Path:
    """The folder of labelled photos named `folder` (one sub-folder per label), looked for in the
    PHOTOBOT_DATASETS folders, then `$DATA_DIR/datasets`. Never downloaded: PhotoBot reaches no
    network at run time but Telegram's, so a missing folder says what to set and where it comes from.
    """
    places = [*map(Path, datasets), Path(data_dir) / "datasets"]
    for place in places:
        candidate = place / folder
        if candidate.is_dir():
            return candidate
    url = PUBLIC_SOURCES.get(folder)
    source = f"; it is the unpacked {url}" if url else " (one sub-folder of photos per label)"
    raise DatasetError(
        f"{folder}/ was not found (looked in: {', '.join(str(p) for p in places)}), and PhotoBot "
        f"downloads nothing at run time. Put the {folder}/ folder{source} in a folder and set "
        "PHOTOBOT_DATASETS to it (or put it in $DATA_DIR/datasets/)."
    )


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def list_photos(root: Path, min_per_class: int = MIN_PHOTOS_PER_CLASS) -> PhotoSet:
    """Read `root/<class>/<photo>`; drop (and count) duplicates and photos filed under two classes.

    Raises DatasetError for a single class or a class with fewer than `min_per_class` photos.
    """
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    seen: dict[str, Photo] = {}
    conflicts: set[str] = set()
    dropped: Counter = Counter()
    for label in classes:
        for path in sorted((root / label).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                dropped["not an image file"] += 1
                continue
            digest = file_digest(path)
            earlier = seen.get(digest)
            if earlier is None:
                seen[digest] = Photo(path, label, digest)
            elif earlier.label == label:
                dropped["duplicate photo"] += 1
            else:
                conflicts.add(digest)
    for digest in conflicts:
        del seen[digest]
        dropped["same photo under two labels"] += 2
    photos = sorted(seen.values(), key=lambda p: (p.label, p.path.name))
    result = PhotoSet(root=root, classes=classes, photos=photos, dropped=dropped)
    check_classes(result.counts(), min_per_class)
    for reason, count in dropped.items():
        log.info("dropped %d photos: %s", count, reason)
    return result


def check_classes(counts: dict[str, int], min_per_class: int = MIN_PHOTOS_PER_CLASS) -> None:
    if len(counts) < 2:
        raise DatasetError(
            f"need at least two classes (one sub-folder each), found {sorted(counts) or 'none'}"
        )
    small = {c: n for c, n in counts.items() if n < min_per_class}
    if small:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(small.items()))
        raise DatasetError(f"each class needs at least {min_per_class} photos; too few: {listed}")


def split_of(digest: str, validation_percent: float, test_percent: float) -> Split:
    """The split a photo belongs to, from its content hash alone: stable as the data set grows."""
    bucket = (int(digest[:15], 16) % 10_000) / 100.0  # [0, 100) in steps of 0.01
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + validation_percent:
        return "validation"
    return "train"


def split_photos(
    photos: Sequence[Photo], validation_percent: float, test_percent: float
) -> dict[Split, list[Photo]]:
    splits: dict[Split, list[Photo]] = {"train": [], "validation": [], "test": []}
    for photo in photos:
        splits[split_of(photo.digest, validation_percent, test_percent)].append(photo)
    return splits


def load_pixels(path: Path) -> np.ndarray:
    """A photo file → the flower model's (224, 224, 3) uint8 input, through the serving adapter."""
    with Image.open(path) as image:
        image.draft("RGB", (256, 256))  # JPEG: decode at reduced size when the photo is much larger
        return flower_input(image)


class BottleneckCache:
    """Backbone features per photo content hash, for one backbone + preprocessing (`key`)."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / key

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        try:
            return np.load(self._path(digest), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None  # missing, or damaged by a crash mid-write: recompute

    def put(self, digest: str, features: np.ndarray) -> None:
        """Write beside and rename, so a reader never sees half a file."""
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{uuid.uuid4().hex}.npy")
        np.save(temporary, np.asarray(features, dtype=np.float32))
        os.replace(temporary, path)


def forget_bottlenecks(root: Path, digests: Sequence[str]) -> int:
    """Delete the cached features of these photos under every backbone's folder; return how many.

    /forget calls it with the hashes of a person's photos: features are a copy of the photo's content.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    removed = 0
    for folder in (p for p in root.iterdir() if p.is_dir()):
        for digest in digests:
            if not _is_sha256(digest):  # never a path built from anything but a hash
                raise ValueError(f"not a SHA-256: {digest!r}")
            path = BottleneckCache(root, folder.name)._path(digest)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
    if removed:
        log.info("removed %d cached feature files of forgotten photos", removed)
    return removed


def _is_sha256(digest: str) -> bool:
    return len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


@dataclass(frozen=True)
class Pixels:
    """A generated image with its content hash, so it can use the bottleneck cache like a photo."""

    digest: str
    pixels: np.ndarray  # (224, 224, 3) uint8
    source: Path | None = None  # the stored photo they were read from; gone (forgotten) → not cached

    @classmethod
    def of(cls, pixels: np.ndarray) -> Pixels:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        return cls(hashlib.sha256(pixels.tobytes()).hexdigest(), pixels)

    @classmethod
    def of_photo(cls, sha256: str, pixels: np.ndarray, source: Path) -> Pixels:
        """A chat photo's pixels, cached under the photo's own SHA-256 so /forget can find them."""
        return cls(sha256, np.ascontiguousarray(pixels, dtype=np.uint8), source)


@dataclass(frozen=True)
class Lazy:
    """An image made only when its features are not cached; `digest` names its recipe, not its pixels."""

    digest: str
    make: Callable[[], np.ndarray]  # → (224, 224, 3) uint8

    @classmethod
    def named(cls, key: str, make: Callable[[], np.ndarray]) -> Lazy:
        return cls(hashlib.sha256(key.encode()).hexdigest(), make)


Item = Photo | Pixels | Lazy


@dataclass(frozen=True)
class Extraction:
    features: np.ndarray  # (n, FEATURES) float32, in the order of the items given
    extracted: int  # how many were computed now (the rest came from the cache)


def _pixels_of(item: Item) -> np.ndarray:
    if isinstance(item, Pixels):
        return item.pixels
    if isinstance(item, Lazy):
        return item.make()
    return load_pixels(item.path)


def _still_stored(item: Item) -> bool:
    """False for a chat photo forgotten while its features were computed: they must not be cached."""
    source = item.source if isinstance(item, Pixels) else None
    return source is None or source.exists()


def bottlenecks(
    items: Sequence[Item],
    cache: BottleneckCache,
    extract: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> Extraction:
    """Features for each item: from the cache, or computed in batches with `extract` and cached."""
    found: dict[str, np.ndarray] = {}
    missing: dict[str, Item] = {}
    for item in items:
        cached = None if item.digest in missing else cache.get(item.digest)
        if cached is None:
            missing[item.digest] = item
        else:
            found[item.digest] = cached
    pending = list(missing.values())
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        pixels = np.stack([_pixels_of(item) for item in batch]).astype(np.float32)
        for item, row in zip(batch, np.asarray(extract(pixels)), strict=True):
            if _still_stored(item):
                cache.put(item.digest, row)
            found[item.digest] = row
        if progress:
            progress(min(start + batch_size, len(pending)), len(pending))
    if not items:
        return Extraction(features=np.zeros((0, 0), np.float32), extracted=0)
    return Extraction(
        features=np.stack([found[i.digest] for i in items]).astype(np.float32), extracted=len(pending)
    )
