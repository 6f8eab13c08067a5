"""The bot room's fixtures: the harness's digit model (trained once per session) and MNIST glyphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.bot import mnist_digits, train_digit_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, mnist_path: Path) -> Path:
    """A model store serving the harness's real digit model (an MLP on 20,000 MNIST digits).

    Trained once for the whole session rather than once per module (it is the same seed and data each
    time). It is a template: `start_bot` and the playground tests copy it into their own DATA_DIR, so a
    test that promotes, rolls back or converts a version changes its copy, never this folder.
    """
    folder = tmp_path_factory.mktemp("bot-models")
    train_digit_model(folder, mnist_path)
    return folder


@pytest.fixture(scope="session")
def glyphs(mnist_path: Path) -> dict[int, np.ndarray]:
    """One real handwritten MNIST test digit per label (read-only: tests draw photos from them)."""
    return mnist_digits(mnist_path)
