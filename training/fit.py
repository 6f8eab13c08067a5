"""One way to fit a model, for `train` and `retrain` alike: the schedule, the callbacks, the two loops.

Two loops, because the data differ by three orders of magnitude:

- `fit`: Keras' own `fit` over arrays or a `tf.data` pipeline (the digit models: MNIST, augmented),
  with an optional cosine decay of the learning rate, and one callback that logs every epoch, keeps the
  history (with whatever `on_epoch` measures, such as held-out chat accuracy) and reports batches and
  epochs to whoever watches (the retrain job's progress line).
- `fit_on_batches`: a plain loop of `train_on_batch` calls with early stopping on a validation loss,
  keeping the best weights (the flower head on cached features, the fine-tuned top of the backbone):
  there an epoch is a few milliseconds of work, and `fit`'s per-epoch set-up would cost ten times that.

Both take per-example weights (`sample_weight`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import keras
import numpy as np

log = logging.getLogger(__name__)

# Called after each epoch with its number (from 1) and its logs; may return more values to record.
OnEpoch = Callable[[int, dict[str, float]], "dict[str, float] | None"]


class Progress(Protocol):
    """Where a fit reports how far it is (the retrain job's `JobProgress`): a fraction and details."""

    def within(self, fraction: float, force: bool = False, **detail: Any) -> None: ...


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3  # Adam's; with `final_learning_rate`, where the cosine starts
    final_learning_rate: float | None = (
        None  # decayed along a cosine to this by the last epoch; None: constant
    )
    patience: int | None = None  # fit_on_batches: epochs without a better validation loss before stopping


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch: loss, accuracy, on_epoch's
    epochs_run: int = 0
    best_epoch: int = 0  # fit_on_batches: the epoch whose weights were kept (0: the starting ones)
    best_loss: float = math.inf


def cosine(start: float, end: float, epochs: int) -> Callable[[int, float], float]:
    """The learning rate of each epoch: `start` at the first, `end` at the last, along half a cosine."""

    def schedule(epoch: int, _rate: float) -> float:
        progress = epoch / max(1, epochs - 1)
        return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress)))

    return schedule


def compile_model(model: keras.Model, learning_rate: float, loss: str) -> keras.Model:
    """Adam at `learning_rate`, the loss, and accuracy (what every fit here reports)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


class EpochCallback(keras.callbacks.Callback):
    """Logs every epoch, records its history (with `on_epoch`'s values), reports batches and epochs."""

    def __init__(
        self, epochs: int, steps: int, progress: Progress | None = None, on_epoch: OnEpoch | None = None
    ) -> None:
        super().__init__()
        self.epochs, self.steps = epochs, max(1, steps)
        self.progress, self.on_epoch = progress, on_epoch
        self.epoch = 0
        self.history: dict[str, list[float]] = {}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.progress is None:
            return
        detail: dict[str, Any] = {"epoch": self.epoch + 1, "epochs": self.epochs}
        accuracy = (logs or {}).get("accuracy")
        if accuracy is not None:
            detail["accuracy"] = round(float(accuracy), 4)
        self.progress.within((self.epoch + (batch + 1) / self.steps) / self.epochs, **detail)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        end_of_epoch(epoch + 1, self.epochs, {k: float(v) for k, v in (logs or {}).items()}, self)


def end_of_epoch(number: int, epochs: int, values: dict[str, float], callback: EpochCallback) -> None:
    """What both loops do after an epoch: measure more, record, log, report."""
    if callback.on_epoch is not None:
        values.update(callback.on_epoch(number, dict(values)) or {})
    for key, value in values.items():
        callback.history.setdefault(key, []).append(value)
    log.info("epoch %d/%d: %s", number, epochs, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if callback.progress is not None:
        detail: dict[str, Any] = {"epoch": number, "epochs": epochs}
        if "accuracy" in values:
            detail["accuracy"] = round(values["accuracy"], 4)
        if "chat_validation_accuracy" in values:
            detail["chat_accuracy"] = round(values["chat_validation_accuracy"], 4)
        callback.progress.within(number / epochs, force=True, **detail)


def fit(
    model: keras.Model,
    data: Any,
    config: FitConfig,
    progress: Progress | None = None,
    *,
    on_epoch: OnEpoch | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FitResult:
    """Train a compiled model with Keras' `fit` for `config.epochs`; return each epoch's values.

    `data` is `(x, y)` or `(x, y, sample_weight)` arrays (Keras shuffles them every epoch), or a
    batched `tf.data.Dataset` that shuffles itself (Keras cannot shuffle one).
    """
    scheduled: list[keras.callbacks.Callback] = []
    if config.final_learning_rate is not None:
        rates = cosine(config.learning_rate, config.final_learning_rate, config.epochs)
        scheduled.append(keras.callbacks.LearningRateScheduler(rates))
    if isinstance(data, tuple):
        x, y, *weights = data
        steps = math.ceil(len(x) / config.batch_size)
    else:
        steps = int(data.cardinality())
    callback = EpochCallback(config.epochs, steps, progress, on_epoch)
    # The scheduler first, so each epoch's logs (and so the history) carry its learning rate.
    every = [*scheduled, callback, *callbacks]
    if isinstance(data, tuple):
        model.fit(
            x,
            y,
            sample_weight=weights[0] if weights else None,
            batch_size=config.batch_size,
            epochs=config.epochs,
            callbacks=every,
            verbose=0,
        )
    else:
        model.fit(data, epochs=config.epochs, callbacks=every, verbose=0, shuffle=False)
    return FitResult(callback.history, epochs_run=len(next(iter(callback.history.values()), [])))


def fit_on_batches(
    model: keras.Model,
    train: tuple[np.ndarray, ...],
    validation: tuple[np.ndarray, np.ndarray],
    config: FitConfig,
    progress: Progress | None = None,
    *,
    rng: np.random.Generator,
    on_epoch: OnEpoch | None = None,
    start_loss: float = math.inf,
) -> FitResult:
    """Train a compiled model batch by batch; stop early on the validation loss and keep the best weights.

    `train` is `(x, y)` or `(x, y, sample_weight)`. Given the starting weights' validation loss
    (`start_loss`), they compete too: a fine-tuning that never beats them leaves the model as it was.
    """
    x, y, *weights = train
    sample_weight = weights[0] if weights else None
    callback = EpochCallback(config.epochs, 1, progress, on_epoch)
    best = FitResult(callback.history, best_loss=start_loss)
    best_weights = model.get_weights()
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(x))
        totals: dict[str, float] = {}
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            logs = model.train_on_batch(
                x[batch].astype(np.float32, copy=False),
                y[batch],
                sample_weight=None if sample_weight is None else sample_weight[batch],
                return_dict=True,
            )
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + float(value) * len(batch)
        loss = validation_loss(model, validation)
        values = {key: total / max(1, len(x)) for key, total in totals.items()}
        end_of_epoch(epoch, config.epochs, {**values, "val_loss": loss}, callback)
        best.epochs_run = epoch
        if loss < best.best_loss:
            best.best_loss, best.best_epoch, best_weights = loss, epoch, model.get_weights()
        elif config.patience is not None and epoch - best.best_epoch >= config.patience:
            break
    model.set_weights(best_weights)
    return best


def validation_loss(model: keras.Model, validation: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = validation
    return float(model.test_on_batch(x.astype(np.float32, copy=False), y, return_dict=True)["loss"])


def predict_batches(model: keras.Model, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The model's outputs for `x` (not empty), batch by batch (no `predict` pipeline: ~50 ms a call)."""
    return np.concatenate(
        [np.asarray(model.predict_on_batch(x[i : i + batch])) for i in range(0, len(x), batch)]
    )
