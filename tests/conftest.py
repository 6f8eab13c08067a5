"""Shared fixtures. Data comes from PHOTOBOT_DATASETS (CI points it at ../shared/data) or is generated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
