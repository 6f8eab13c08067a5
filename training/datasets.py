"""Dataset loading: MNIST from a local `mnist.npz` first, Keras' download only as a last resort.

Development machines and CI have no internet but the package registries, so the loader looks in the
folders of `PHOTOBOT_DATASETS`, then in `$DATA_DIR/datasets/`, and only then asks Keras to download.
An offline failure becomes one `DatasetUnavailable` whose message says what to set.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MNIST_FILE = "mnist.npz"
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


class DatasetUnavailable(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says how to provide it."""


def find_mnist(search_dirs: Sequence[Path], data_dir: Path) -> Path | None:
    """The first `mnist.npz` among the PHOTOBOT_DATASETS folders and `$DATA_DIR/datasets/`."""
    for folder in [*map(Path, search_dirs), Path(data_dir) / "datasets"]:
        candidate = folder / MNIST_FILE
        if candidate.is_file():
            return candidate
    return None


def load_mnist(
    search_dirs: Sequence[Path],
    data_dir: Path,
    *,
    allow_download: bool = True,
    url: str = MNIST_URL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return `(x_train, y_train, x_test, y_test)`: uint8 (n, 28, 28) images and int64 labels.

    Looked up in `search_dirs`, then `data_dir/datasets/`; if absent, downloaded into
    `data_dir/datasets/` (unless `allow_download` is False). Raises DatasetUnavailable otherwise.
    """
    path = find_mnist(search_dirs, data_dir)
    if path is None:
        if not allow_download:
            raise DatasetUnavailable(_missing_message(search_dirs, data_dir, "downloading is disabled"))
        path = _download_mnist(search_dirs, Path(data_dir), url)
    return _read_mnist(path)


def _read_mnist(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = tuple(np.asarray(data[key]) for key in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, KeyError, ValueError) as error:
        raise DatasetUnavailable(f"{path} is not a usable mnist.npz ({error})") from error
    x_train, y_train, x_test, y_test = arrays
    logger.info("MNIST from %s: %d training, %d test digits", path, len(x_train), len(x_test))
    return (
        x_train.astype(np.uint8),
        y_train.astype(np.int64),
        x_test.astype(np.uint8),
        y_test.astype(np.int64),
    )


def _download_mnist(search_dirs: Sequence[Path], data_dir: Path, url: str) -> Path:
    """Fetch mnist.npz into data_dir/datasets/ with Keras' downloader (checks the file's hash)."""
    import keras

    target = data_dir / "datasets"
    target.mkdir(parents=True, exist_ok=True)
    logger.info("mnist.npz not found locally; downloading %s", url)
    try:
        fetched = keras.utils.get_file(
            fname=MNIST_FILE,
            origin=url,
            cache_dir=str(target.resolve()),
            cache_subdir=".",
            file_hash="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        )
    except Exception as error:  # Keras wraps network failures in several exception types
        (target / MNIST_FILE).unlink(missing_ok=True)
        raise DatasetUnavailable(
            _missing_message(search_dirs, data_dir, f"the download failed: {error}")
        ) from error
    return Path(fetched)


def _missing_message(search_dirs: Sequence[Path], data_dir: Path, why: str) -> str:
    looked = ", ".join(str(p) for p in [*search_dirs, Path(data_dir) / "datasets"])
    return (
        f"mnist.npz was not found (looked in: {looked}) and {why}. "
        "Set PHOTOBOT_DATASETS to a folder that holds mnist.npz (Keras layout), "
        "or put the file in $DATA_DIR/datasets/."
    )


def dataset_options(parser: argparse.ArgumentParser) -> None:
    """Where a `python -m training.…` command finds mnist.npz (photobot's own commands use Settings)."""
    parser.add_argument(
        "--datasets",
        type=Path,
        action="append",
        default=[],
        help="a folder holding mnist.npz (repeatable; as PHOTOBOT_DATASETS in .env)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("var"), help="DATA_DIR: datasets/ under it is searched too"
    )
