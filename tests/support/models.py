"""Real, tiny models and photos for the engine's tests and every other test that needs a model to serve.

The models are trained here on real data — a few thousand MNIST digits, a few dozen flower photos — in
seconds, and saved into a real ModelStore. Nothing of ours is mocked. Tests get them through the root
conftest's `tiny_digit_model` and `tiny_flower_model` fixtures, which train each configuration once per
test run (`TinyModels`, shared by pytest-xdist's workers) and hand every test its own copy.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from inference import digits, flowers
from inference.model_store import ModelStore, ModelVersion
from tests.support.shared import locked

FLOWER_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def load_mnist_subset(mnist_path: Path, n_train: int = 3000, n_test: int = 200):
    with np.load(mnist_path) as data:
        return (
            data["x_train"][:n_train],
            data["y_train"][:n_train],
            data["x_test"][:n_test],
            data["y_test"][:n_test],
        )


def flower_files(flowers_path: Path, per_class: int, offset: int = 0) -> list[tuple[Path, str]]:
    files = []
    for label in FLOWER_CLASSES:
        names = sorted((flowers_path / label).glob("*.jpg"))
        files += [(f, label) for f in names[offset : offset + per_class]]
    return files


class TinyModels:
    """Tiny real models, each trained once per test run and configuration, then copied to where a test asks.

    A configuration (seed, width, data) always trains the same model, so training it again for every test
    module would only cost seconds of CPU: the first request trains it into `folder` (a folder of this run
    that pytest-xdist's workers share: one trains while the others wait on its lock), later ones copy that
    file. Every caller gets a copy of its own, so a test that damages or replaces its model file cannot
    touch another test's.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._digits: dict[tuple[Path, int, int], Path] = {}
        self._flowers: dict[tuple[Path, int], tuple[Path, dict]] = {}

    def digits(
        self, mnist_path: Path, path: Path, *, hidden: int = 64, seed: int = 0, converted: bool = False
    ) -> Path:
        """A small MLP on (28, 28, 1) inputs, trained a few epochs on 3,000 real MNIST digits, at `path`
        (with its LiteRT conversion beside it when `converted`: see `copy`)."""
        key = (mnist_path, hidden, seed)
        if key not in self._digits:
            self._digits[key] = self._once(
                f"digits-h{hidden}-s{seed}.keras", lambda to: self._train_digits(mnist_path, hidden, seed, to)
            )
        return self.copy(self._digits[key], path, converted=converted)

    def flowers(
        self, flowers_path: Path, path: Path, *, per_class: int = 12, converted: bool = False
    ) -> tuple[Path, dict]:
        """A tiny two-output flower model ([probabilities, ood features]) like the shipped one, at `path`.

        Returns the model file and the meta["ood"] block fitted on its own training features.
        """
        key = (flowers_path, per_class)
        if key not in self._flowers:
            trained = self._once(
                f"flowers-{per_class}.keras", lambda to: self._train_flowers(flowers_path, per_class, to)
            )
            self._flowers[key] = trained, json.loads(trained.with_suffix(".ood.json").read_text())
        trained, ood = self._flowers[key]
        return self.copy(trained, path, converted=converted), ood

    def copy(self, trained: Path, path: Path, *, converted: bool) -> Path:
        """`trained` copied to `path`; when `converted`, with its LiteRT conversion beside it, as a
        version's folder holds one after its first start (`add_version` takes it along). The conversion
        is made once per run and model: the same bytes always convert to the same file."""
        shutil.copy2(trained, path)
        if converted:
            for made in self._conversion(trained):
                shutil.copy2(made, path.with_name(made.name))
        return path

    def _conversion(self, trained: Path) -> tuple[Path, ...]:
        """The conversion of `trained` and its SHA-256 file (none where LiteRT is not installed)."""
        from inference.lite import conversion_file, hash_file, lite_installed, serve_with_lite

        if not lite_installed():
            return ()
        cached = conversion_file(trained)
        with locked(self.folder / f"{trained.name}.conversion.lock"):
            if not cached.is_file():
                import keras

                serve_with_lite(keras.saving.load_model(trained, compile=False, safe_mode=True), trained)
        return cached, hash_file(cached)

    def _once(self, name: str, train: Callable[[Path], None]) -> Path:
        """`folder/name`, trained by `train(path)` unless this run has it already. It trains in a folder
        of its own and what it wrote is moved into place after, the model file last: a model file there
        is whole, with what was written beside it."""
        path = self.folder / name
        with locked(self.folder / f"{name}.lock"):
            if not path.is_file():
                staging = self.folder / f"staging-{name}"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir()
                train(staging / name)
                for made in sorted(staging.iterdir(), key=lambda file: file.name == name):
                    made.rename(self.folder / made.name)
                staging.rmdir()
        return path

    def _train_digits(self, mnist_path: Path, hidden: int, seed: int, path: Path) -> None:
        import keras

        keras.utils.set_random_seed(seed)
        x_train, y_train, _, _ = load_mnist_subset(mnist_path)
        x = np.stack([digits.normalize_digit(image) for image in x_train])[..., None]
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(hidden, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y_train, epochs=4, batch_size=64, verbose=0)
        model.save(path, include_optimizer=False)

    def _train_flowers(self, flowers_path: Path, per_class: int, path: Path) -> None:
        """The model at `path`, its meta["ood"] block beside it (`.ood.json`)."""
        import keras

        keras.utils.set_random_seed(0)
        files = flower_files(flowers_path, per_class)
        x = np.stack([flowers.flower_input(Image.open(f)) for f, _ in files]).astype(np.float32)
        y = np.array([FLOWER_CLASSES.index(label) for _, label in files])
        inputs = keras.Input((224, 224, 3))
        h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        h = keras.layers.AveragePooling2D(8)(h)
        h = keras.layers.Conv2D(8, 3, activation="relu")(h)
        features = keras.layers.GlobalAveragePooling2D(name="features")(h)
        probs = keras.layers.Dense(len(FLOWER_CLASSES), activation="softmax", name="probabilities")(features)
        model = keras.Model(inputs, [probs, features])
        trainer = keras.Model(inputs, probs)
        trainer.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        trainer.fit(x, y, epochs=8, batch_size=16, verbose=0)
        model.save(path, include_optimizer=False)
        train_features = np.asarray(model.predict_on_batch(x)[1])
        means = np.stack([train_features[y == c].mean(axis=0) for c in range(len(FLOWER_CLASSES))])
        distances = ((train_features[:, None, :] - means[None]) ** 2).sum(-1).min(1)
        ood = {
            "means": means.tolist(),
            "unsure_above": float(np.percentile(distances, 95) * 2),
            "reject_above": float(np.percentile(distances, 95) * 4),
            "min_confidence": 0.0,
        }
        path.with_suffix(".ood.json").write_text(json.dumps(ood))


def add_version(
    store: ModelStore, name: str, model_file: Path, meta: dict, *, promote: bool = True
) -> ModelVersion:
    """`model_file` published as a new version of `name` (made active unless `promote` is False).

    A LiteRT conversion of it cached beside it (`TinyModels.copy(converted=True)`) comes along into the
    version's folder, where a first start would have written it: the version serves through LiteRT at
    once. Without one, the first start converts it, as for any new version.
    """
    from inference.lite import conversion_file, hash_file

    with store.new_version(name, meta) as staged:
        shutil.copy2(model_file, staged.path / "model.keras")
    version = store.get(name, staged.version)
    conversion = conversion_file(model_file)
    if conversion.is_file():
        for made in (hash_file(conversion), conversion):  # the hash first, as inference.lite writes them
            shutil.copy2(made, version.path / made.name)
    if promote:
        store.promote(name, version.version)
    return version


def convert_served(models_dir: Path) -> Path:
    """Cache the LiteRT conversion of every model's active version in the store at `models_dir`, as the
    first start of a bot or a command does (inference.lite): a copy of the store serves its versions
    through LiteRT from the start, with no conversion (the flower model's takes ~18 s of CPU) and, in
    a new process, without importing Keras. Where LiteRT is not installed nothing is converted."""
    from inference.engine import EngineConfig
    from inference.lite import lite_installed
    from inference.loading import load_version

    if not lite_installed():
        return models_dir
    store = ModelStore(models_dir)
    for name in store.names():
        version = store.active(name)
        if version is not None:
            load_version(version, max_batch=EngineConfig().max_batch, padded_sizes=(), runtime="lite")
    return models_dir


def digit_meta(**extra) -> dict:
    return {"labels": list(digits.LABELS), "preprocessing": digits.PREPROCESSING_ID, **extra}


def flower_meta(ood: dict, **extra) -> dict:
    return {"labels": list(FLOWER_CLASSES), "preprocessing": flowers.PREPROCESSING_ID, "ood": ood, **extra}


def digit_photo(
    mnist_digit: np.ndarray, *, size: tuple[int, int] = (640, 480), seed: int = 0, fmt: str = "JPEG"
) -> bytes:
    """A simple photo of a handwritten digit: dark ink on light, slightly uneven paper, JPEG."""
    rng = np.random.default_rng(seed)
    width, height = size
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    paper = 215 + 25 * (0.6 * x + 0.4 * y) + rng.normal(0, 3, (height, width))
    scale = int(min(width, height) * rng.uniform(0.45, 0.7))
    glyph = Image.fromarray(255 - np.asarray(mnist_digit, np.uint8)).resize((scale, scale), Image.BILINEAR)
    glyph = np.asarray(glyph.filter(ImageFilter.GaussianBlur(1)), np.float32) / 255.0
    top = int(rng.integers(height // 10, height - scale - height // 10))
    left = int(rng.integers(width // 10, width - scale - width // 10))
    region = paper[top : top + scale, left : left + scale]
    paper[top : top + scale, left : left + scale] = region * (0.25 + 0.75 * glyph)
    rgb = np.clip(np.stack([paper, paper * 0.98, paper * 0.94], -1), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, quality=90)
    return buffer.getvalue()


def scene_photo(seed: int = 0, size: tuple[int, int] = (320, 240)) -> bytes:
    """A colourful non-digit picture (shapes on a gradient): neither a digit on paper nor a flower."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        box = sorted(rng.integers(0, size[0], 2).tolist()), sorted(rng.integers(0, size[1], 2).tolist())
        draw.rectangle(
            (box[0][0], box[1][0], box[0][1], box[1][1]), fill=tuple(rng.integers(0, 255, 3).tolist())
        )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_meta(path: Path, meta: dict) -> None:
    path.write_text(json.dumps(meta))
