"""What an experiment is: its configuration, its runs, and the splits, subsets and seeds they use.

Every architecture is trained on the same sequence of splits — split k is a function of the recorded
experiment seed and k alone — so the comparison is paired. Each run's weight seed derives from the
experiment seed, the split and the architecture. `load_data` brings the examples the splits index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DATA_KINDS = ("digits", "flowers")
_SPLIT_STREAM = 1  # SeedSequence stream ids, so splits, subsets and weights never share random numbers
_SUBSET_STREAM = 2
_WEIGHTS_STREAM = 3


class ExperimentError(RuntimeError):
    """The experiment cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment is. Everything but `archs` and `splits` fixes the results, so those fields
    must match when an output folder is resumed; adding architectures or splits later is fine."""

    archs: tuple[str, ...]  # canonical specs: "mlp:800", "mlp:10,10", "cnn"
    splits: int = 10  # how many random train/test splits each architecture is trained on
    epochs: int = 5
    data: str = "digits"  # "digits" (all 70,000 MNIST images) or "flowers" (backbone features)
    seed: int = 0  # split k and every run's weights derive from this
    test_fraction: float = 0.2  # the course's 80/20
    batch_size: int = 200  # the course's batch size
    limit: int | None = None  # use a fixed random subset of this many examples (quick tries); None: all
    train_eval_max: int = 10_000  # training accuracy is measured on at most this many training examples

    def fingerprint(self) -> dict:
        """The fields that make two results comparable."""
        return {
            key: value for key, value in dataclasses.asdict(self).items() if key not in ("archs", "splits")
        }


@dataclass(frozen=True)
class Run:
    """One architecture trained and evaluated on one split."""

    arch: str
    split: int

    @property
    def run_id(self) -> str:
        return f"{self.arch}@{self.split}"


@dataclass(frozen=True)
class DataLocation:
    """Where the datasets are: the PHOTOBOT_DATASETS folders and DATA_DIR (plain paths, picklable)."""

    search_dirs: tuple[Path, ...]
    data_dir: Path


@dataclass(frozen=True)
class LabelledData:
    """A whole data set in memory: inputs (uint8 images or float32 features) and integer labels."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int


def parse_arch(text: str, data: str = "digits") -> str:
    """Check an architecture spec and return its canonical form ("MLP:10, 10" → "mlp:10,10")."""
    spec = text.strip().lower().replace(" ", "")
    kind, _, params = spec.partition(":")
    if kind == "mlp":
        try:
            hidden = [int(h) for h in params.split(",")]
        except ValueError:
            hidden = []
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"{text!r}: an MLP is mlp:H or mlp:H1,H2,… with positive layer sizes")
        return "mlp:" + ",".join(map(str, hidden))
    if kind == "cnn" and not params:
        if data != "digits":
            raise ValueError("cnn works on digit images only; flowers use linear or mlp:H heads on features")
        return "cnn"
    if kind == "linear" and not params:
        if data != "flowers":
            raise ValueError("linear is a head on flower features; digits use mlp:H or cnn")
        return "linear"
    raise ValueError(f"{text!r}: unknown architecture (use mlp:800, mlp:10,10, cnn; linear for flowers)")


def planned_runs(config: ExperimentConfig) -> list[Run]:
    """All runs in the order they are done: architecture by architecture, as given, splits inside."""
    return [Run(arch, split) for arch in config.archs for split in range(config.splits)]


def split_indices(n: int, split: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) indices of split `split`: a permutation fixed by (seed, split) only."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM, split]))
    order = rng.permutation(n)
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise ValueError(f"a test fraction of {test_fraction} leaves no train or no test examples of {n}")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def split_digest(train_idx: np.ndarray, test_idx: np.ndarray) -> str:
    """A short fingerprint of a split, stored with each run so that pairing can be checked later."""
    digest = hashlib.sha256(np.asarray(train_idx, dtype=np.int64).tobytes())
    digest.update(b"|" + np.asarray(test_idx, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def run_seed(seed: int, split: int, arch: str) -> int:
    """The weight seed of one run: distinct for every architecture and split, fixed by the seed."""
    state = np.random.SeedSequence([seed, _WEIGHTS_STREAM, split, zlib.crc32(arch.encode())])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


def subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The examples an experiment uses: all of them, or a fixed random `limit` of them."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SUBSET_STREAM]))
    return np.sort(rng.choice(n, size=limit, replace=False))


def load_data(config: ExperimentConfig, location: DataLocation) -> LabelledData:
    """The experiment's examples: digits = MNIST's 60,000 + 10,000 pooled, to be split 80/20 anew."""
    if config.data == "digits":
        from training.datasets import load_mnist

        x_train, y_train, x_test, y_test = load_mnist(location.search_dirs, location.data_dir)
        x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        num_classes = 10
        keep = subset_indices(len(y), config.limit, config.seed)
        return LabelledData(x[keep], y[keep].astype(np.int64), num_classes)
    if config.data == "flowers":
        return _flower_features(config, location)
    raise ExperimentError(f"unknown data {config.data!r}; choose one of {', '.join(DATA_KINDS)}")


def _flower_features(config: ExperimentConfig, location: DataLocation) -> LabelledData:
    """Every flower photo as its backbone features, from the flower job's bottleneck cache
    (`$DATA_DIR/cache/bottlenecks`); features not cached yet are computed once and cached."""
    from training.flower_data import BottleneckCache, bottlenecks, find_flower_photos, list_photos
    from training.train_flowers import cache_key

    photo_set = list_photos(find_flower_photos(location.search_dirs, location.data_dir))
    photos = [photo_set.photos[i] for i in subset_indices(len(photo_set.photos), config.limit, config.seed)]
    cache = BottleneckCache(location.data_dir / "cache" / "bottlenecks", cache_key())
    backbone: list[Any] = []  # the Keras backbone (untyped), once built

    def extract(pixels: np.ndarray) -> np.ndarray:
        if not backbone:  # built only when some photo is not in the cache yet
            from training.effnet_lite0 import build_backbone

            logger.info("computing backbone features of the photos not in the cache yet")
            backbone.append(build_backbone())
        return backbone[0].predict_on_batch(pixels)

    features = bottlenecks(photos, cache, extract).features
    labels = np.array([photo_set.classes.index(p.label) for p in photos], dtype=np.int64)
    return LabelledData(features, labels, len(photo_set.classes))
