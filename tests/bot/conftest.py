"""The bot room's fixtures: the harness's digit model (trained once per run) and MNIST glyphs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.support.bot import mnist_digits, train_digit_model
from tests.support.models import convert_served
from tests.support.shared import built_once


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, mnist_path: Path) -> Path:
    """A model store serving the harness's real digit model (an MLP on 20,000 MNIST digits), with its
    LiteRT conversion cached as a first start of the bot leaves it.

    Trained and converted once for the whole run rather than once per module, and converted here rather
    than by every bot started from it (it is the same seed and data each time). It is a template:
    `start_bot` and the playground tests copy it into their own DATA_DIR, so a test that promotes, rolls
    back or converts a version changes its copy, never this folder.
    """

    def build(folder: Path) -> None:
        train_digit_model(folder, mnist_path)
        convert_served(folder)

    return built_once(tmp_path_factory, "bot-models", build)


@pytest.fixture(scope="session")
def served_models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, shipped_models: Path) -> Path:
    """What `photobot run` and the playground serve, ready: the harness's digit model and the shipped
    flower model, both converted. A bot process started on a copy neither seeds nor converts anything
    (the flower model alone would take ~20 s of CPU), and serves without importing Keras."""

    def build(folder: Path) -> None:
        shutil.copytree(model_dir, folder, dirs_exist_ok=True)
        shutil.copytree(shipped_models / "flowers", folder / "flowers")

    return built_once(tmp_path_factory, "served-models", build)


@pytest.fixture(scope="session")
def glyphs(mnist_path: Path) -> dict[int, np.ndarray]:
    """One real handwritten MNIST test digit per label (read-only: tests draw photos from them)."""
    return mnist_digits(mnist_path)
