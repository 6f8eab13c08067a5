"""The photos `photobot bench bot` sends (and `bench playground` its one): made the same every run."""

from __future__ import annotations

import os
import random
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings


def bench_photos(kind: str, count: int, settings: Settings) -> list[bytes]:
    if kind == "digits":
        return digit_photos(count, settings)
    return flower_photos(count, settings)


def datasets(settings: Settings) -> list[Path]:
    env = os.environ.get("PHOTOBOT_DATASETS", "")
    return [*settings.datasets, *(Path(p) for p in env.split(os.pathsep) if p)]


def digit_photos(count: int, settings: Settings) -> list[bytes]:
    """Phone-like 1280×960 photos of MNIST test digits (one to three digits), from training.synth_photos."""
    import numpy as np

    from training import synth_photos

    mnist = next((d / "mnist.npz" for d in datasets(settings) if (d / "mnist.npz").is_file()), None)
    if mnist is None:
        raise UserFacingError("mnist.npz not found: set PHOTOBOT_DATASETS")
    with np.load(mnist) as data:
        images, labels = data["x_test"], data["y_test"]
    rng = np.random.default_rng(2026)
    photos = []
    for _ in range(count):
        picks = rng.choice(len(images), size=int(rng.integers(1, 4)))
        style = synth_photos.random_style(rng, size=(1280, 960))
        data, _label = synth_photos.render_photo([images[i] for i in picks], rng, style, labels=labels[picks])
        photos.append(data)
    return photos


def flower_photos(count: int, settings: Settings) -> list[bytes]:
    """Real photos from flower_photos/, the same ones every run."""
    folder = next((d / "flower_photos" for d in datasets(settings) if (d / "flower_photos").is_dir()), None)
    if folder is None:
        raise UserFacingError("flower_photos/ not found: set PHOTOBOT_DATASETS")
    files = sorted(folder.glob("*/*.jpg"))
    return [path.read_bytes() for path in random.Random(2026).sample(files, min(count, len(files)))]
