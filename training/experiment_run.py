"""One run of an experiment: a fresh model of one architecture, trained and measured on one split."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime

import numpy as np

from training.experiment_plan import (
    ExperimentConfig,
    LabelledData,
    Run,
    run_seed,
    split_digest,
    split_indices,
)

logger = logging.getLogger(__name__)


def execute_run(run: Run, config: ExperimentConfig, data: LabelledData) -> dict:
    """Train one architecture from fresh weights on one split; return the record to store."""
    import keras

    seed = run_seed(config.seed, run.split, run.arch)
    keras.backend.clear_session()  # a fresh graph per run: memory stays flat over hundreds of runs
    keras.utils.set_random_seed(seed)
    train_idx, test_idx = split_indices(len(data.y), run.split, config.seed, config.test_fraction)
    if len(train_idx) > config.train_eval_max:  # a random sample of the very examples it trained on
        picker = np.random.default_rng(seed)
        train_eval_idx = np.sort(picker.choice(train_idx, config.train_eval_max, replace=False))
    else:
        train_eval_idx = train_idx
    model = build_model(run.arch, config.data, data.num_classes, int(np.prod(data.x.shape[1:])))
    x_train = _model_input(data.x[train_idx])
    y_train = np.eye(data.num_classes, dtype=np.float32)[data.y[train_idx]]
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(x_train, y_train, epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0)
    train_seconds = time.perf_counter() - started
    test_accuracy = _accuracy(model, data.x[test_idx], data.y[test_idx])
    train_accuracy = _accuracy(model, data.x[train_eval_idx], data.y[train_eval_idx])
    return {
        "run_id": run.run_id,
        "arch": run.arch,
        "split": run.split,
        "seed": seed,
        "experiment": config.fingerprint(),
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "split_digest": split_digest(train_idx, test_idx),
        "n_train_eval": len(train_eval_idx),
        "parameters": int(model.count_params()),
        "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(
            time.process_time() - cpu_started, 3
        ),  # all threads: the work, whatever the load
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def build_model(arch: str, data: str, num_classes: int, feature_size: int = 0):
    """A fresh compiled model for a canonical architecture spec: the digit factories for digits; for
    flowers, the flower job's softmax head on the backbone features, with hidden layers for mlp:H."""
    hidden = tuple(int(h) for h in arch.split(":", 1)[1].split(",")) if arch.startswith("mlp:") else ()
    if data == "digits":
        from training.digit_models import make_cnn, make_mlp

        return make_cnn() if arch == "cnn" else make_mlp(hidden)
    import keras

    from training.flower_model import head_layers

    features = keras.Input((feature_size,), name="features")
    x = features
    for index, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden{index}")(x)
    model = keras.Model(features, head_layers(x, num_classes), name=arch.replace(":", "_").replace(",", "_"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _model_input(x: np.ndarray) -> np.ndarray:
    """uint8 digit images → (n, 28, 28, 1) float32 in [0, 1], the digit models' input."""
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0)[..., None]
    return x.astype(np.float32, copy=False)


def _accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Accuracy by calling the model on batches (no `predict`: it traces a new function per model)."""
    correct = 0
    for start in range(0, len(y), batch):
        probabilities = np.asarray(model(_model_input(x[start : start + batch]), training=False))
        correct += int(np.sum(np.argmax(probabilities, axis=1) == y[start : start + batch]))
    return correct / len(y)


def limit_threads(threads: int) -> None:
    """Cap the backend's thread pools so that parallel runs share the cores instead of fighting."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
        return
    if keras.backend.backend() != "tensorflow":
        return  # JAX sizes its pools when it starts; XLA_FLAGS is the place to limit it
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process: its pools are fixed now
        logger.debug("TensorFlow already initialised; thread limits not changed")
