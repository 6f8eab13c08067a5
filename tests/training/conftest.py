"""The training room's fixtures: a data dir whose model store serves a tiny real digit model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from inference.model_store import ModelStore
from photobot.settings import Settings
from tests.support.models import add_version, digit_meta


@pytest.fixture
def digit_settings(tmp_path: Path, mnist_path: Path, tiny_digit_model) -> Callable[..., Settings]:
    """`digit_settings(**overrides)`: Settings for `tmp_path`; its model store serves a tiny digit model.

    The model (an MLP, 32 wide, on 3,000 real MNIST digits) is trained once per session and copied here.
    """

    def make(**overrides) -> Settings:
        settings = Settings(data_dir=tmp_path, datasets=(mnist_path.parent,))
        model_file = tiny_digit_model(tmp_path / "tiny-digits.keras", hidden=32)
        meta = digit_meta(metrics={}, augmented=False)
        add_version(ModelStore(settings.models_dir), "digits", model_file, meta)
        return replace(settings, **overrides)

    return make
