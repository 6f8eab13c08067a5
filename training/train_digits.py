"""Train a digit model on MNIST (optionally with photo-read digits) and put it in the model store.

The course's MLP is reproduced exactly — raw MNIST scaled to [0, 1], adam, categorical cross-entropy,
batch 200, 20 epochs. The default CNN trains on MNIST framed by the serving code (`normalize_digit`),
with augmentation and, optionally, digits that went all the way through the photo pipeline: rendered as
phone photos by `training.synth_photos` and read back by `inference.digits.read_digits`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from inference.digits import LABELS, PREPROCESSING_ID, normalize_digit
from inference.model_store import MODEL_FILE, ModelStore, ModelVersion
from training.digit_models import INPUT_SHAPE, make_cnn, make_mlp
from training.fit import FitConfig, fit, predict_batches

logger = logging.getLogger(__name__)

ARCHITECTURES = ("cnn", "mlp")


@dataclass(frozen=True)
class DigitTrainingConfig:
    """How a digit model is made; saved into its meta.json so every model says how it was made."""

    arch: str = "cnn"  # "cnn" (default reader) or "mlp" (the course's network)
    hidden: tuple[int, ...] = (800,)  # MLP hidden layer sizes
    epochs: int | None = None  # None: 20 for the MLP (the course), 10 for the CNN
    batch_size: int | None = None  # None: 200 for the MLP (the course), 128 for the CNN
    limit: int | None = None  # train on the first N MNIST training digits only (quick runs)
    augment: bool | None = None  # None: on for the CNN, off for the MLP
    photo_digits: int = 0  # extra training digits rendered as photos and read back by the serving code
    style_copies: int = 0  # restyled copies of every training digit (training.style_augment); photos too
    seed: int = 0
    learning_rate: float = 1e-3  # Adam's, decayed along a cosine to 1/50 of it for the CNN
    init_from: str | None = None  # start from this .keras model's weights (same architecture): fine-tuning

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else (20 if self.arch == "mlp" else 10)

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else (200 if self.arch == "mlp" else 128)

    @property
    def resolved_augment(self) -> bool:
        return self.augment if self.augment is not None else self.arch == "cnn"

    def describe(self) -> str:
        if self.arch == "mlp":
            return "mlp 784-" + "-".join(str(h) for h in self.hidden) + "-10"
        return "cnn conv5x5x32-pool-conv64x2-pool-conv128-gap-10 (batch norm)"


@dataclass
class TrainedDigits:
    model: keras.Model
    config: DigitTrainingConfig
    test_accuracy: float
    history: dict[str, list[float]]
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


def mnist_inputs(images: np.ndarray, *, framed: bool) -> np.ndarray:
    """(N, 28, 28) uint8 → (N, 28, 28, 1) float32 in [0, 1]; `framed` re-frames each digit like serving."""
    if framed:
        return np.stack([normalize_digit(image) for image in images])[..., np.newaxis]
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def train_digits(
    config: DigitTrainingConfig,
    mnist: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    photo_data: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: Path | None = None,
) -> TrainedDigits:
    """Train the configured model and measure it on the full MNIST test set.

    With `checkpoint` (a `.keras` path) the model is also saved after every epoch, so a long run on a
    busy machine leaves something usable if it has to be stopped.
    """
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    keras.utils.set_random_seed(config.seed)
    x_train, y_train, x_test, y_test = mnist
    if config.limit:
        x_train, y_train = x_train[: config.limit], y_train[: config.limit]
    framed = config.arch == "cnn"  # the MLP is the course's, on raw MNIST
    x = mnist_inputs(x_train, framed=framed)
    y = y_train
    if config.style_copies:
        x, y = with_restyled_copies(x, y, x_train, y_train, config.style_copies, config.seed)
    if photo_data is not None and len(photo_data[0]):
        x = np.concatenate([x, photo_data[0][..., np.newaxis].astype(np.float32)])
        y = np.concatenate([y, photo_data[1]])
    y_onehot = keras.utils.to_categorical(y, 10)
    x_eval = mnist_inputs(x_test, framed=framed)
    if config.arch == "cnn":
        model = make_cnn(learning_rate=config.learning_rate)
    else:
        model = make_mlp(config.hidden, learning_rate=config.learning_rate)
    if config.init_from:
        start = keras.saving.load_model(config.init_from, compile=False, safe_mode=True)
        model.set_weights(start.get_weights())
    epochs, batch = config.resolved_epochs, config.resolved_batch_size
    callbacks: list[keras.callbacks.Callback] = []
    if checkpoint is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoint), save_weights_only=False))
    rate = config.learning_rate
    fit_config = FitConfig(
        epochs=epochs,
        batch_size=batch,
        learning_rate=rate,
        final_learning_rate=rate / 50 if config.arch == "cnn" else None,
    )
    batches = training_data(x, y_onehot, batch, seed=config.seed, augment=config.resolved_augment)
    started = time.monotonic()
    fitted = fit(model, batches, fit_config, on_epoch=on_epoch, callbacks=callbacks)
    seconds = time.monotonic() - started
    accuracy = mnist_accuracy(model, x_eval, y_test)
    logger.info("%s: MNIST test accuracy %.4f after %.0f s", config.describe(), accuracy, seconds)
    data = {
        "mnist_train": len(x_train),
        "photo_digits": 0 if photo_data is None else len(photo_data[0]),
        "restyled_digits": config.style_copies * len(x_train),
        "mnist_test": len(x_test),
    }
    return TrainedDigits(
        model=model,
        config=config,
        test_accuracy=accuracy,
        history=fitted.history,
        seconds=seconds,
        data=data,
    )


def with_restyled_copies(
    x: np.ndarray, y: np.ndarray, images: np.ndarray, labels: np.ndarray, copies: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The framed training digits plus `copies` restyled copies of each (other writers' styles)."""
    from training.style_augment import restyled_digits

    started = time.monotonic()
    extra = [
        restyled_digits(images, labels, seed=seed * 100 + copy)[..., np.newaxis] for copy in range(copies)
    ]
    logger.info("restyled %d copies of %d digits in %.0f s", copies, len(images), time.monotonic() - started)
    return np.concatenate([x, *extra]), np.concatenate([y, *([labels] * copies)])


def mnist_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Top-1 accuracy on (N, 28, 28, 1) inputs."""
    return float(np.mean(predict_batches(model, x, batch).argmax(axis=1) == y))


def training_data(
    x: np.ndarray,
    y_onehot: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    augment: bool,
    sample_weight: np.ndarray | None = None,
    shape: tuple[int, ...] = INPUT_SHAPE,
) -> Any:
    """What `fit` takes for (N, 28, 28, 1) digits: augmented batches, or the arrays (Keras shuffles them).

    `shape` is the model's input shape when it is not (28, 28, 1) (an older model that takes 784 values).
    """
    if augment:
        from training.augment import augmented_dataset

        data = augmented_dataset(x, y_onehot, batch_size, seed=seed, sample_weight=sample_weight)
        if shape != INPUT_SHAPE:
            data = data.map(lambda images, *rest: (_reshaped(images, shape), *rest))
        return data
    arrays = (x.reshape(len(x), *shape), y_onehot)
    return arrays if sample_weight is None else (*arrays, sample_weight)


def _reshaped(images: Any, shape: tuple[int, ...]) -> Any:
    import tensorflow as tf

    return tf.reshape(images, (-1, *shape))


def save_trained(
    store: ModelStore,
    trained: TrainedDigits,
    *,
    command: str,
    promote: bool = True,
    name: str = "digits",
    extra_meta: dict[str, Any] | None = None,
) -> ModelVersion:
    """Write the model (without optimizer state) and its meta.json as a new store version."""
    meta = build_meta(trained, command=command, **(extra_meta or {}))
    with store.new_version(name, meta) as staged:
        save_for_serving(trained.model, staged.path / MODEL_FILE)
    version = store.get(name, staged.published)
    if promote:
        store.promote(name, version.version)
    return version


def build_meta(trained: TrainedDigits, *, command: str, **extra: Any) -> dict[str, Any]:
    config = trained.config
    return {
        "labels": list(LABELS),
        "architecture": config.describe(),
        "preprocessing": PREPROCESSING_ID,
        "input": "(N, 28, 28, 1) float32 in [0, 1], light ink on black (MNIST polarity)",
        "data": trained.data,
        "epochs": config.resolved_epochs,
        "batch_size": config.resolved_batch_size,
        "augmented": config.resolved_augment,
        "config": asdict(config),
        "parameters": int(trained.model.count_params()),
        "metrics": {"mnist_test_accuracy": trained.test_accuracy},
        "test_accuracy": trained.test_accuracy,
        "history": trained.history,
        "training_seconds": round(trained.seconds, 1),
        "keras_version": keras.__version__,
        "command": command,
        **extra,
    }


def save_for_serving(model: keras.Model, path: Path) -> None:
    """Save the layers and weights only: no optimizer state (3× smaller), nothing serving does not need."""
    serving = keras.Model(model.inputs, model.outputs, name=model.name)
    serving.save(path)


def parse_hidden(text: str) -> tuple[int, ...]:
    """'800' → (800,), '10,10' → (10, 10)."""
    try:
        sizes = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(
            f"--hidden takes layer sizes separated by commas, e.g. 800 or 10,10; got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--hidden sizes must be positive integers; got {text!r}")
    return sizes


def photo_training_digits(
    images: np.ndarray, labels: np.ndarray, count: int, seed: int, *, restyle: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Render `count` MNIST training digits as small phone photos and read them back like serving does.

    With `restyle`, every other digit is first redrawn in another writer's style
    (`training.style_augment`): the camera's changes on top of the handwriting's. Only photos on which
    the reader finds exactly one digit are kept (the rest are counted and logged):
    the model learns the crops that serving will really give it.
    """
    from inference.digits import read_digits
    from training.style_augment import restyled_uint8
    from training.synth_photos import PhotoStyle, random_style, render_array

    rng = np.random.default_rng(seed)
    crops, kept_labels, dropped = [], [], 0
    for number in range(count):
        index = int(rng.integers(len(images)))
        style: PhotoStyle = random_style(rng, size=(320, 240))
        image = images[index]
        if restyle and number % 2:
            image = restyled_uint8(image, int(labels[index]), rng)
        photo = render_array([image], rng, style)
        found = read_digits(photo)
        if len(found.crops) == 1:
            crops.append(found.crops[0])
            kept_labels.append(int(labels[index]))
        else:
            dropped += 1
    logger.info(
        "photo training digits: %d kept, %d dropped (not read as exactly one digit)", len(crops), dropped
    )
    if not crops:
        return np.zeros((0, 28, 28), np.float32), np.zeros(0, np.int64)
    return np.stack(crops), np.asarray(kept_labels, np.int64)


def command_line(argv: Sequence[str]) -> str:
    return " ".join(argv)
