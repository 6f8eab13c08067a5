"""Train the flower model: cached backbone features → softmax head → "not a flower" detector → store.

The job, in order: list and split the labelled photos (stable content hash), get every photo's
features from the bottleneck cache (computing only the new ones), train the head with dropout, weight
decay and early stopping on validation, fit and calibrate the out-of-distribution detector, measure on
the held-out test split and on non-flower photos, and save the whole serving model as a new version.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from inference.flowers import PREPROCESSING_ID, OodRule, flower_input
from inference.model_store import MODEL_FILE, ModelStore, ModelVersion
from training.effnet_lite0 import FEATURES, backbone_id, build_backbone, imagenet_head
from training.fine_tune import FineTuneConfig, Keep, fine_tune
from training.fit import FitConfig, FitResult, Progress, compile_model, fit_on_batches
from training.flower_data import (
    BottleneckCache,
    DatasetError,
    Lazy,
    Photo,
    PhotoSet,
    Split,
    bottlenecks,
    list_photos,
    load_pixels,
    split_photos,
)
from training.flower_model import (
    HEAD_FILE,
    MODEL_NAME,
    FlowerHead,
    assemble_flower_model,
    head_layers,
    tuned_backbone_id,
)
from training.flower_refusal import PHOTOS, fit_detector
from training.imagenet_evidence import fit_rule, imagenet_probabilities
from training.numpy_fit import softmax
from training.ood import Thresholds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowerConfig:
    validation_percent: float = 10.0  # of the photos, by content hash
    test_percent: float = 10.0  # held out: never used for training or calibration
    epochs: int = 300  # an upper bound; early stopping on validation loss decides
    batch_size: int = 128
    learning_rate: float = 1e-3
    dropout: float = 0.3  # on the 1280 features, during head training only
    l2: float = 1e-4  # weight decay of the head's kernel
    patience: int = 25  # epochs without a better validation loss before stopping
    seed: int = 0
    ood: str = PHOTOS  # the "not a flower" detector: the training photos, or class CENTRES
    ood_rank: int = 32  # covariance directions kept by the class-centre detector (see training.ood)
    other_pass: float = 0.01  # share of calibration non-flowers it may let through (see calibrate)
    keep_flowers: float = 0.99  # … but never more than this share of validation flowers
    calibration_photos: int = 300  # synthetic non-flower photos (seed 1) to place the refusal threshold
    evaluation_photos: int = 300  # synthetic non-flower photos (seed 2) to measure it
    package_photos: bool = True  # also measure on the real photos shipped in installed packages
    fine_tune: bool = False  # also retrain the top of the backbone on augmented photos (training.fine_tune)
    fine_tune_variants: int = FineTuneConfig.variants  # augmented copies of each training photo
    fine_tune_epochs: int = FineTuneConfig.epochs
    fine_tune_from_block: int = FineTuneConfig.first_block
    # --fine-tune keeps the pretrained ImageNet head's answers (on the flowers and on photos of other
    # things: synthetic, the dev halves of other_photos/ and of the package photos), so the served
    # model still carries the ImageNet evidence that the refusal weighs
    fine_tune_keep_imagenet: bool = False


@dataclass
class TrainResult:
    version: ModelVersion
    metrics: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    extracted: int = 0  # photos whose features were computed in this run (the rest came from the cache)


def cache_key(backbone: str | None = None) -> str:
    """The feature cache's name for a backbone (default: the installed package's) and the preprocessing."""
    return f"{backbone or backbone_id()}-{PREPROCESSING_ID}"


def train_head(
    train: tuple[np.ndarray, ...],
    validation: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    config: FlowerConfig,
    *,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    measure: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray, FitResult]:
    """Fit Dense-softmax on features; returns (kernel, bias, fit) of the best validation epoch.

    `train` is `(x, y)` or `(x, y, sample_weight)`. `start`: the (kernel, bias) to start from (a
    retrain warm-starts from the serving head) instead of a fresh initialisation. `measure`: named
    (x, y) sets whose accuracy goes into the history after every epoch.
    """
    keras.utils.set_random_seed(config.seed)
    features = keras.Input((train[0].shape[1],), name="features")
    model = keras.Model(features, head_layers(features, n_classes, config.dropout, config.l2))
    if start is not None:
        model.get_layer("probabilities").set_weights(list(start))
    compile_model(model, config.learning_rate, "sparse_categorical_crossentropy")
    fit_config = FitConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        patience=config.patience,
    )

    def accuracies(_epoch: int, _logs: dict[str, float]) -> dict[str, float]:
        return {
            name: float(np.mean(np.asarray(model.predict_on_batch(x)).argmax(1) == y))
            for name, (x, y) in (measure or {}).items()
            if len(x)
        }

    rng = np.random.default_rng(config.seed)
    fitted = fit_on_batches(model, train, validation, fit_config, progress, rng=rng, on_epoch=accuracies)
    kernel, bias = model.get_layer("probabilities").get_weights()
    log.info(
        "head: best validation loss %.4f at epoch %d of %d",
        fitted.best_loss,
        fitted.best_epoch,
        fitted.epochs_run,
    )
    return kernel, bias, fitted


def head_answers(head: FlowerHead, x: np.ndarray) -> np.ndarray:
    """The class index the head picks for each feature row (an empty array for no rows)."""
    if len(x) == 0:
        return np.zeros(0, np.int64)
    return (x @ head.kernel + head.bias).argmax(axis=1)


def feature_arrays(
    items: Sequence[Any],
    classes: Sequence[str],
    by_digest: dict[str, np.ndarray],
    labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(features, class indices) of photos (anything with `.digest`), from cached features.

    The labels are the items' own `.label`, or `labels` (chat photos carry theirs beside them).
    """
    if not items:
        return np.zeros((0, FEATURES), np.float32), np.zeros(0, np.int64)
    x = np.stack([by_digest[item.digest] for item in items])
    names = labels if labels is not None else [item.label for item in items]
    return x, np.array([list(classes).index(name) for name in names], dtype=np.int64)


def decide(probabilities: np.ndarray, distances: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """The serving rule (inference.flowers) applied to many photos: an array of statuses."""
    rule = OodRule.from_meta(thresholds.as_meta())
    nearest = distances.min(axis=1)
    confidence = probabilities.max(axis=1)
    status = np.full(len(nearest), "ok", dtype=object)
    status[confidence < rule.min_confidence] = "unsure"
    status[nearest > rule.unsure_above] = "unsure"
    status[nearest > rule.reject_above] = "not_recognized"
    return status


def non_flower_sets(config: FlowerConfig, mnist_file: Path | None) -> dict[str, list[tuple[str, Lazy]]]:
    """Calibration (synthetic, seed 1) and measurement (synthetic seed 2, digits, package photos) images.

    Each is made only if its features are not cached yet, so a warm run draws nothing. Digit photos
    draw MNIST test digits from `mnist_file`.
    """
    from training.non_flowers import Recipe, package_recipes, synthetic_recipes

    def drawn(recipe: Recipe) -> Callable[[], np.ndarray]:
        return lambda: flower_input(recipe.make())

    def lazy(recipes: list[Recipe]) -> list[tuple[str, Lazy]]:
        return [(r.kind, Lazy.named(r.key, drawn(r))) for r in recipes]

    return {
        "calibration": lazy(synthetic_recipes(config.calibration_photos, 1, mnist_file=mnist_file)),
        "synthetic": lazy(synthetic_recipes(config.evaluation_photos, 2, mnist_file=mnist_file)),
        "digits": lazy(synthetic_recipes(config.evaluation_photos // 3, 3, ("digits",), mnist_file)),
        "package": lazy(package_recipes()) if config.package_photos else [],
    }


def keep_imagenet(config: FlowerConfig, photos_root: Path, mnist_file: Path | None) -> Keep:
    """What a fine-tuning must keep: the ImageNet head, on photos of none of the flowers (the synthetic
    calibration set, and the dev halves of `other_photos/` beside the flowers and of the package
    photos; the held halves stay for reporting)."""
    from training.halves import half_of, package_source
    from training.non_flowers import package_recipes, synthetic_recipes

    recipes = synthetic_recipes(config.calibration_photos, 1, mnist_file=mnist_file)
    recipes += [r for r in package_recipes() if half_of(package_source(r.kind)) == "dev"]
    photos = [flower_input(recipe.make()) for recipe in recipes]
    other_photos = photos_root.parent / "other_photos"
    photos += [
        load_pixels(path) for path in sorted(other_photos.glob("*.jpg")) if half_of(path.name) == "dev"
    ]
    return Keep(imagenet_head(), photos)


def train_flowers(
    photos_root: Path,
    store: ModelStore,
    cache_root: Path,
    config: FlowerConfig = FlowerConfig(),
    command: Sequence[str] = (),
    promote: bool = True,
    progress: Callable[[str], None] = lambda message: None,
    mnist_file: Path | None = None,
    model_name: str = MODEL_NAME,
) -> TrainResult:
    """Run the whole job and store the model as a new version (made active when `promote`).

    `mnist_file`: the mnist.npz whose test digits are drawn as non-flower photos (`find_mnist`).
    `model_name`: the model store's name for it: any image classifier of the catalogue trains here, from
    the folder of labelled photos its entry names (`photos_root`).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    photo_set = list_photos(photos_root)
    splits = split_photos(photo_set.photos, config.validation_percent, config.test_percent)
    for name in ("train", "validation", "test"):
        if not splits[name] and (name == "train" or getattr(config, f"{name}_percent") > 0):
            raise DatasetError(f"the {name} split is empty: add photos or change the split percentages")
    progress(f"{len(photo_set.photos)} photos in {len(photo_set.classes)} classes: {photo_set.counts()}")

    backbone = build_backbone()
    extract = backbone.predict_on_batch
    cache = BottleneckCache(cache_root, cache_key())
    timings["load"] = time.perf_counter() - started

    mark = time.perf_counter()
    extraction = bottlenecks(photo_set.photos, cache, extract, progress=_every(progress, "features"))
    timings["features"] = time.perf_counter() - mark
    by_digest = dict(zip((p.digest for p in photo_set.photos), extraction.features, strict=True))
    classes = photo_set.classes

    def arrays(photos: list[Photo]) -> tuple[np.ndarray, np.ndarray]:
        return feature_arrays(photos, classes, by_digest)

    train, validation, test = arrays(splits["train"]), arrays(splits["validation"]), arrays(splits["test"])
    mark = time.perf_counter()
    kernel, bias, fitted = train_head(
        train, validation if len(validation[0]) else train, len(classes), config
    )
    timings["head"] = time.perf_counter() - mark
    backbone_name = backbone_id()
    extracted = extraction.extracted

    if config.fine_tune:
        mark = time.perf_counter()
        held = splits["validation"] or splits["train"]
        backbone, kernel, bias = fine_tune(
            backbone,
            (kernel, bias),
            ([p.path for p in splits["train"]], train[1]),
            ([p.path for p in held], arrays(held)[1]),
            FineTuneConfig(
                variants=config.fine_tune_variants,
                epochs=config.fine_tune_epochs,
                first_block=config.fine_tune_from_block,
                seed=config.seed,
            ),
            progress,
            keep=keep_imagenet(config, photos_root, mnist_file) if config.fine_tune_keep_imagenet else None,
        )
        backbone_name = tuned_backbone_id(backbone)
        extract = backbone.predict_on_batch
        cache = BottleneckCache(cache_root, cache_key(backbone_name))
        tuned = bottlenecks(
            photo_set.photos, cache, extract, progress=_every(progress, "fine-tuned features")
        )
        extracted += tuned.extracted
        by_digest.update(zip((p.digest for p in photo_set.photos), tuned.features, strict=True))
        train, validation, test = (
            arrays(splits["train"]),
            arrays(splits["validation"]),
            arrays(splits["test"]),
        )
        timings["fine_tune"] = time.perf_counter() - mark

    mark = time.perf_counter()
    others = non_flower_sets(config, mnist_file)
    other_runs = {name: bottlenecks([p for _, p in items], cache, extract) for name, items in others.items()}
    other_features = {name: run.features for name, run in other_runs.items()}
    extracted += sum(run.extracted for run in other_runs.values())
    calibration_set = validation if len(validation[0]) else train
    detector = fit_detector(
        config.ood,
        train,
        len(classes),
        calibration_set[0],
        softmax(calibration_set[0] @ kernel + bias).max(axis=1),
        other_features["calibration"],
        rank=config.ood_rank,
        keep_flowers=config.keep_flowers,
        other_pass=config.other_pass,
    )
    head, thresholds = FlowerHead(kernel=kernel, bias=bias, ood=detector.params), detector.thresholds
    # a fine-tuned backbone's features moved, unless it was tuned to keep the ImageNet head's answers
    imagenet = imagenet_head() if not config.fine_tune or config.fine_tune_keep_imagenet else None
    rule = (
        fit_rule(
            imagenet_probabilities(train[0], *imagenet), imagenet_probabilities(calibration_set[0], *imagenet)
        )
        if imagenet is not None
        else None
    )
    timings["ood"] = time.perf_counter() - mark

    metrics = evaluate_features(head, thresholds, train, validation, test, others, other_features, classes)
    metrics["epochs"] = fitted.epochs_run
    progress(_summary(metrics))

    mark = time.perf_counter()
    model = assemble_flower_model(backbone, head, imagenet)
    meta = {
        "labels": classes,
        "preprocessing": PREPROCESSING_ID,
        "backbone": backbone_name,
        "fine_tuned": config.fine_tune,
        "outputs": ["probabilities", "distances", *(["imagenet"] if rule else [])],
        "ood": {**detector.meta, **({"imagenet": rule.as_meta()} if rule else {})},
        "metrics": metrics,
        "data": _data_summary(photo_set, splits),
        "config": asdict(config),
        "command": list(command),
        "parent": store.active_version(model_name),
    }
    with store.new_version(model_name, meta) as staged:
        model.save(staged.path / MODEL_FILE)
        head.save(staged.path / HEAD_FILE)
    version = (
        store.promote(model_name, staged.published) if promote else store.get(model_name, staged.published)
    )
    timings["save"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    store.update_meta(model_name, version.version, timings_s={k: round(v, 2) for k, v in timings.items()})
    return TrainResult(
        version=store.get(model_name, version.version),
        metrics=metrics,
        timings_s=timings,
        extracted=extracted,
    )


def evaluate_features(
    head: FlowerHead,
    thresholds: Thresholds,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    others: dict[str, list[tuple[str, Lazy]]],
    other_features: dict[str, np.ndarray],
    classes: list[str],
) -> dict[str, Any]:
    """Accuracy per split and class, and how the detector treats test flowers and non-flower photos."""

    def outputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return softmax(x @ head.kernel + head.bias), head.ood.distances(x)

    metrics: dict[str, Any] = {}
    for name, (x, y) in (("train", train), ("validation", validation), ("test", test)):
        if len(x):
            metrics[f"{name}_accuracy"] = round(float(np.mean(outputs(x)[0].argmax(1) == y)), 4)
    if len(test[0]):
        probabilities, distances = outputs(test[0])
        status = decide(probabilities, distances, thresholds)
        right = probabilities.argmax(1) == test[1]
        metrics["test_ok"] = round(float(np.mean(status == "ok")), 4)
        metrics["test_ok_accuracy"] = (
            round(float(np.mean(right[status == "ok"])), 4) if (status == "ok").any() else None
        )
        metrics["per_class"] = {
            c: round(float(np.mean(right[test[1] == i])), 4) for i, c in enumerate(classes)
        }
        metrics["test_max_softmax_p05"] = round(float(np.quantile(probabilities.max(1), 0.05)), 4)
    refused: dict[str, Any] = {}
    for name in ("synthetic", "digits", "package", "calibration"):
        x = other_features[name]
        if not len(x):
            continue
        status = decide(*outputs(x), thresholds)
        kinds = np.array(
            [kind.split("-")[0] if name != "package" else _package_kind(kind) for kind, _ in others[name]]
        )
        refused[name] = {
            "n": len(x),
            "refused": round(float(np.mean(status != "ok")), 4),
            "not_recognized": round(float(np.mean(status == "not_recognized")), 4),
            "by_kind": {k: round(float(np.mean(status[kinds == k] != "ok")), 4) for k in sorted(set(kinds))},
        }
    metrics["non_flowers"] = refused
    return metrics


def _package_kind(name: str) -> str:
    return "lfw-faces" if name.startswith("lfw-") else "photos"


def _summary(metrics: dict[str, Any]) -> str:
    parts = [
        f"test accuracy {metrics.get('test_accuracy', float('nan')):.1%}",
        f"test flowers ok {metrics.get('test_ok', 0):.1%}",
    ]
    for name, values in metrics["non_flowers"].items():
        if name != "calibration":
            parts.append(f"{name} refused {values['refused']:.1%} of {values['n']}")
    return ", ".join(parts)


def _data_summary(photo_set: PhotoSet, splits: dict[Split, list[Photo]]) -> dict[str, Any]:
    return {
        "root": str(photo_set.root),
        "classes": photo_set.counts(),
        "splits": {name: len(photos) for name, photos in splits.items()},
        "dropped": dict(photo_set.dropped),
    }


def _every(progress: Callable[[str], None], what: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if done == total or done % 320 == 0:
            progress(f"{what}: {done}/{total} computed")

    return report


def save_metrics(path: Path, result: TrainResult) -> None:
    path.write_text(json.dumps(result.metrics, indent=2), encoding="utf-8")
