"""Dataset loading: MNIST from a local `mnist.npz`, never from the network.

PhotoBot talks to nothing but Telegram at run time, so the datasets are fetched once by whoever runs
it (the README says from where) and found in the folders of `PHOTOBOT_DATASETS`, then in
`$DATA_DIR/datasets/`. A missing file becomes one `DatasetUnavailable` whose message says what to set
and where the file comes from.
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
    search_dirs: Sequence[Path], data_dir: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return `(x_train, y_train, x_test, y_test)`: uint8 (n, 28, 28) images and int64 labels.

    Looked up in `search_dirs`, then `data_dir/datasets/`; raises DatasetUnavailable when absent.
    """
    path = find_mnist(search_dirs, data_dir)
    if path is None:
        raise DatasetUnavailable(_missing_message(search_dirs, data_dir))
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


def _missing_message(search_dirs: Sequence[Path], data_dir: Path) -> str:
    looked = ", ".join(str(p) for p in [*search_dirs, Path(data_dir) / "datasets"])
    return (
        f"mnist.npz was not found (looked in: {looked}), and PhotoBot downloads nothing at run time. "
        f"Fetch it once from {MNIST_URL} into a folder and set PHOTOBOT_DATASETS to that folder "
        "(or put the file in $DATA_DIR/datasets/)."
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
