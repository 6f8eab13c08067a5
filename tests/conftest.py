"""Fixtures every room shares: the datasets, and the real models trained from them once per session.

Data comes from PHOTOBOT_DATASETS (CI points it at ../shared/data) or is generated. A room's own fixtures
live in its conftest.py (tests/bot/conftest.py: the bot harness's model); plain helpers in tests.support.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.models import TinyModels
from tests.support.postgres import backend, database, postgres_server, postgres_url  # noqa: F401 (fixtures)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def dataset_dirs() -> list[Path]:
    raw = os.environ.get("PHOTOBOT_DATASETS", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The real mnist.npz; CI must have it, so a missing file is a failure when the variable is set."""
    for folder in dataset_dirs():
        if (folder / "mnist.npz").is_file():
            return folder / "mnist.npz"
    if dataset_dirs():
        pytest.fail(f"PHOTOBOT_DATASETS={os.environ['PHOTOBOT_DATASETS']} has no mnist.npz")
    pytest.skip("PHOTOBOT_DATASETS is not set")


@pytest.fixture(scope="session")
def flowers_path() -> Path:
    """The real flower_photos/ folder (one sub-folder per class)."""
    for folder in dataset_dirs():
        if (folder / "flower_photos").is_dir():
            return folder / "flower_photos"
    if dataset_dirs():
        pytest.fail(f"PHOTOBOT_DATASETS={os.environ['PHOTOBOT_DATASETS']} has no flower_photos/")
    pytest.skip("PHOTOBOT_DATASETS is not set")


@pytest.fixture(scope="session")
def flower_backbone(tmp_path_factory: pytest.TempPathFactory):
    """The converted EfficientNet-Lite0 backbone, built once per session and loaded back from `.keras`."""
    import keras

    from training.effnet_lite0 import build_backbone

    path = tmp_path_factory.mktemp("effnet") / "backbone.keras"
    build_backbone().save(path)
    return keras.saving.load_model(path, safe_mode=True)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """This session's tiny trained models (each configuration trained on first use, then copied)."""
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_digit_model(tiny_models: TinyModels, mnist_path: Path) -> Callable[..., Path]:
    """`tiny_digit_model(path, hidden=64, seed=0)`: a copy of a tiny MLP digit model at `path` (returned)."""

    def copy_to(path: Path, *, hidden: int = 64, seed: int = 0) -> Path:
        return tiny_models.digits(mnist_path, path, hidden=hidden, seed=seed)

    return copy_to


@pytest.fixture(scope="session")
def digit_model_file(tiny_digit_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny digit model (64 wide, seed 0) as a file that tests copy into their own stores."""
    return tiny_digit_model(tmp_path_factory.mktemp("digit-model") / "digits.keras")


@pytest.fixture(scope="session")
def tiny_flower_model(tiny_models: TinyModels, flowers_path: Path) -> Callable[..., tuple[Path, dict]]:
    """`tiny_flower_model(path, per_class=12)`: a copy of a tiny two-output flower model and its ood block."""

    def copy_to(path: Path, *, per_class: int = 12) -> tuple[Path, dict]:
        return tiny_models.flowers(flowers_path, path, per_class=per_class)

    return copy_to
