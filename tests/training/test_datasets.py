"""The MNIST loader: local files only, and a clear message (what to set, where to fetch it) without them."""

import os
import subprocess
import sys

import numpy as np
import pytest

from training.datasets import MNIST_URL, DatasetUnavailable, find_mnist, load_mnist


def _tiny_mnist(path):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_train=np.arange(20) % 10,
        x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        y_test=np.arange(5),
    )


def test_the_real_mnist_is_loaded_from_the_datasets_folder(mnist_path, tmp_path):
    x_train, y_train, x_test, y_test = load_mnist([mnist_path.parent], tmp_path)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert set(np.unique(y_test)) == set(range(10))


def test_search_order_is_datasets_folders_then_data_dir(tmp_path):
    first, second, data_dir = tmp_path / "a", tmp_path / "b", tmp_path / "var"
    for folder in (first, second, data_dir / "datasets"):
        folder.mkdir(parents=True)
    _tiny_mnist(data_dir / "datasets" / "mnist.npz")
    assert find_mnist([first, second], data_dir) == data_dir / "datasets" / "mnist.npz"
    _tiny_mnist(second / "mnist.npz")
    assert find_mnist([first, second], data_dir) == second / "mnist.npz"
    x_train, y_train, _, y_test = load_mnist([first, second], data_dir)
    assert len(x_train) == 20 and y_train[:3].tolist() == [0, 1, 2] and y_test.tolist() == [0, 1, 2, 3, 4]


def test_no_file_names_the_variable_to_set(tmp_path):
    with pytest.raises(DatasetUnavailable) as raised:
        load_mnist([tmp_path / "empty"], tmp_path / "var")
    message = str(raised.value)
    assert "PHOTOBOT_DATASETS" in message and "mnist.npz" in message
    assert str(tmp_path / "empty") in message


def test_a_missing_file_is_never_downloaded_and_the_error_says_where_it_comes_from(tmp_path):
    """No network at run time but Telegram's: the loader names the public source instead of fetching it."""
    with pytest.raises(DatasetUnavailable) as raised:
        load_mnist([], tmp_path / "var")
    assert "PHOTOBOT_DATASETS" in str(raised.value) and MNIST_URL in str(raised.value)
    assert not (tmp_path / "var").exists()  # nothing was fetched or even prepared for a download


def test_a_damaged_file_is_reported_not_crashed_on(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetUnavailable, match=r"not a usable mnist\.npz"):
        load_mnist([tmp_path], tmp_path / "var")


@pytest.mark.process
def test_the_command_line_says_what_to_set_without_a_traceback(tmp_path):
    env = {**os.environ, "PHOTOBOT_DATASETS": str(tmp_path / "nothing"), "DATA_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "-m", "photobot", "train", "digits", "--arch", "mlp"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1
    assert "PHOTOBOT_DATASETS" in result.stderr
    assert "Traceback" not in result.stderr
