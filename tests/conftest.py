"""Fixtures every room shares: the datasets, the real models trained from them and the shipped models
seeded, each made once per test run (shared by pytest-xdist's workers) and copied by the tests.

Data comes from PHOTOBOT_DATASETS (CI points it at ../shared/data) or is generated. A room's own fixtures
live in its conftest.py (tests/bot/conftest.py: the bot harness's model); plain helpers in tests.support.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.models import TinyModels, convert_served
from tests.support.postgres import backend, database, postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.support.shared import built_once, run_folder

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
    """This run's tiny trained models (each configuration trained on first use, then copied)."""
    folder = run_folder(tmp_path_factory) / "tiny-models"
    folder.mkdir(exist_ok=True)
    return TinyModels(folder)


@pytest.fixture(scope="session")
def shipped_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store as a fresh install's first start leaves it: every model of the catalogue seeded
    from its shipped default and converted for LiteRT. Made once per run (`built_once`), it is a
    template: a test copies it into its own DATA_DIR (`models/`), and a process started there serves
    at once, with no seeding and no conversion. The first start itself is tested from an empty store."""
    from photobot.serving import seed_models
    from photobot.settings import Settings

    def build(folder: Path) -> None:
        seed_models(Settings(data_dir=folder))
        convert_served(folder / "models")

    return built_once(tmp_path_factory, "shipped-data", build) / "models"


@pytest.fixture(scope="session")
def tiny_digit_model(tiny_models: TinyModels, mnist_path: Path) -> Callable[..., Path]:
    """`tiny_digit_model(path, hidden=64, seed=0, converted=False)`: a copy of a tiny MLP digit model at
    `path` (returned), with its LiteRT conversion beside it when `converted`."""

    def copy_to(path: Path, *, hidden: int = 64, seed: int = 0, converted: bool = False) -> Path:
        return tiny_models.digits(mnist_path, path, hidden=hidden, seed=seed, converted=converted)

    return copy_to


@pytest.fixture(scope="session")
def digit_model_file(tiny_digit_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny digit model (64 wide, seed 0) as a file that tests copy into their own stores."""
    return tiny_digit_model(tmp_path_factory.mktemp("digit-model") / "digits.keras")


@pytest.fixture(scope="session")
def converted_digit_model_file(
    tiny_digit_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`digit_model_file` with its LiteRT conversion beside it: `add_version` publishes it as a version
    is after its first start, served through LiteRT at once. A new version's conversion runs in a
    process of its own that imports TensorFlow (seconds of CPU for each store a test makes): tests that
    are not about that first start use this one."""
    folder = tmp_path_factory.mktemp("converted-digit-model")
    return tiny_digit_model(folder / "digits.keras", converted=True)


@pytest.fixture(scope="session")
def tiny_flower_model(tiny_models: TinyModels, flowers_path: Path) -> Callable[..., tuple[Path, dict]]:
    """`tiny_flower_model(path, per_class=12, converted=False)`: a copy of a tiny two-output flower model
    and its ood block (the model's LiteRT conversion beside it when `converted`)."""

    def copy_to(path: Path, *, per_class: int = 12, converted: bool = False) -> tuple[Path, dict]:
        return tiny_models.flowers(flowers_path, path, per_class=per_class, converted=converted)

    return copy_to
