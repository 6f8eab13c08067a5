"""Which backbone, view and head make the best flower model: one measured comparison (issue 18, part 1).

    python -m benchmarks.flower_backbones --photos DATASETS/flower_photos --cache DIR [--json OUT]

For every feature set (a backbone at an input size, on a view of the photo), the features of all the
labelled photos are computed once through LiteRT (as the engine serves) and kept in `--cache`, for the
photo and for its mirror image. Then heads are fitted on the training split, chosen on the validation
split and reported on the test split (the flower job's content-hash split, 10% / 10%):

- views: the serving crop (shorter side scaled to size × 256/224, centre crop) and the full photo
  squeezed to a square; test-time augmentation averages the features of the views and their mirrors;
- the 224-px serving crop upscaled to 260 for Lite2 (what a model that resizes inside would see);
- Lite0 and Lite2 features side by side (concatenated);
- heads: the flower job's own recipe (`training.train_flowers.train_head`: dropout, L2, early stopping
  on validation) and softmax regressions with L2 weight decay and label smoothing (L-BFGS).

Features on the cores here cost about 10 ms per Lite0-sized pass: the whole run is ~15 minutes cold.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.numpy_fit import softmax

log = logging.getLogger(__name__)

Views = dict[str, np.ndarray]  # "centre", "centre-flip", "full", "full-flip" → (N, features)


@dataclass(frozen=True)
class FeatureSet:
    name: str
    variant: str  # training.effnet_lite.VARIANTS
    size: int  # the backbone's input
    views: tuple[str, ...]  # "centre", "full", "upscaled" (the 224 serving crop, resized to `size`)


FEATURE_SETS = (
    FeatureSet("lite0-224", "lite0", 224, ("centre", "full")),
    FeatureSet("lite2-260", "lite2", 260, ("centre",)),
    FeatureSet("lite1-240", "lite1", 240, ("centre",)),
    FeatureSet("lite0-260", "lite0", 260, ("centre",)),
    FeatureSet("lite2-224up", "lite2", 260, ("upscaled",)),
)


def view(path: Path, size: int, kind: str) -> np.ndarray:
    """One photo as the backbone's (size, size, 3) uint8 input."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if kind == "full":
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    crop = 224 if kind == "upscaled" else size
    shorter = round(crop * 256 / 224)
    width, height = image.size
    scale = shorter / min(width, height)
    scaled = (max(shorter, round(width * scale)), max(shorter, round(height * scale)))
    image = image.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (scaled[0] - crop) // 2, (scaled[1] - crop) // 2
    image = image.crop((left, top, left + crop, top + crop))
    if kind == "upscaled":
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def convert_int8(model: Any, representative: np.ndarray) -> bytes:
    """The model as LiteRT with int8 weights and activations (float input and output), its ranges
    measured on `representative` photos."""
    import tempfile

    import tensorflow as tf

    def rows() -> Iterable[list[np.ndarray]]:
        for row in representative:
            yield [row[None].astype(np.float32)]

    with tempfile.TemporaryDirectory(prefix="photobot-int8-") as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = rows
        flatbuffer: bytes = converter.convert()
        return flatbuffer


def extract(
    feature_set: FeatureSet, paths: list[Path], cache: Path, representative: list[Path] | None = None
) -> Views:
    """Every view's features and its mirror's, from `cache` or computed through LiteRT (then cached);
    with `representative` photos, through the int8 conversion calibrated on them."""
    suffix = "-int8" if representative else ""
    file = cache / f"{feature_set.name}{suffix}.npz"
    if file.is_file():
        with np.load(file) as stored:
            if stored["centre" if "centre" in stored else feature_set.views[0]].shape[0] == len(paths):
                return {k: stored[k] for k in stored.files}
    from inference.lite import LiteModel, convert
    from training.effnet_lite import build_backbone

    started = time.perf_counter()
    backbone = build_backbone(feature_set.variant, feature_set.size)
    if representative:
        kind = feature_set.views[0]
        pixels = np.stack([view(p, feature_set.size, kind) for p in representative])
        lite = LiteModel(convert_int8(backbone, pixels), threads=2)
    else:
        lite = LiteModel(convert(backbone), threads=2)
    features: Views = {}
    for kind in feature_set.views:
        name = "centre" if kind == "upscaled" else kind
        plain, mirrored = [], []
        for start in range(0, len(paths), 32):
            pixels = np.stack([view(p, feature_set.size, kind) for p in paths[start : start + 32]])
            batch = pixels.astype(np.float32)
            plain.append(np.asarray(lite.predict_on_batch(batch)))
            mirrored.append(np.asarray(lite.predict_on_batch(np.ascontiguousarray(batch[:, :, ::-1]))))
            if start % 640 == 0:
                log.info("%s %s: %d/%d", feature_set.name, kind, start, len(paths))
        features[name], features[f"{name}-flip"] = np.concatenate(plain), np.concatenate(mirrored)
    log.info("%s: %d photos in %.0f s", feature_set.name, len(paths), time.perf_counter() - started)
    cache.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = dict(features)
    np.savez(file, **arrays)
    return features


TTA = {
    "centre": ("centre",),
    "centre+flip": ("centre", "centre-flip"),
    "centre+full": ("centre", "full"),
    "centre+full+flips": ("centre", "centre-flip", "full", "full-flip"),
}


def fit_softmax(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised features, L2 on that kernel, label-smoothed
    targets; returned as (kernel, bias) on the raw features (the standardisation folded in)."""
    from scipy.optimize import minimize  # type: ignore[import-untyped]

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (np.asarray(x, np.float64) - mean) / scale
    targets = np.full((len(y), n_classes), smoothing / n_classes)
    targets[np.arange(len(y)), y] += 1.0 - smoothing
    dims = z.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = theta[: dims * n_classes].reshape(dims, n_classes), theta[dims * n_classes :]
        logits = z @ kernel + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -np.sum(targets * log_p) / len(y) + 0.5 * l2 * np.sum(kernel**2)
        delta = (np.exp(log_p) - targets) / len(y)
        grad = np.concatenate([(z.T @ delta + l2 * kernel).ravel(), delta.sum(axis=0)])
        return float(value), grad

    theta = np.zeros(dims * n_classes + n_classes)
    result = minimize(loss, theta, jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    kernel = result.x[: dims * n_classes].reshape(dims, n_classes) / scale[:, None]
    bias = result.x[dims * n_classes :] - mean @ kernel
    return kernel.astype(np.float32), bias.astype(np.float32)


def recipe_head(
    train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The flower job's head: `train_head` with `FlowerConfig`'s defaults."""
    from training.train_flowers import FlowerConfig, train_head

    kernel, bias, _ = train_head(train, validation, n_classes, FlowerConfig())
    return kernel, bias


Head = Callable[
    [tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int], tuple[np.ndarray, np.ndarray]
]


# The softmax regressions compared with the recipe: (L2 on the standardised kernel, label smoothing).
SOFTMAX_HEADS = ((1e-2, 0.0), (1e-1, 0.0), (1e-2, 0.1))
CV_HEAD = "softmax-l20.01-ls0"  # the head of the cross-validation (cheap, and no validation split needed)
CV_FOLDS = 5


def softmax_head(l2: float, smoothing: float) -> Head:
    def fit(
        train: tuple[np.ndarray, np.ndarray], _validation: tuple[np.ndarray, np.ndarray], n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return fit_softmax(*train, n_classes, l2, smoothing)

    return fit


def heads() -> dict[str, Head]:
    made: dict[str, Head] = {"recipe": recipe_head}
    for l2, smoothing in SOFTMAX_HEADS:
        made[f"softmax-l2{l2:g}-ls{smoothing:g}"] = softmax_head(l2, smoothing)
    return made


def cross_validated(x: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int) -> float:
    """Accuracy over every photo, each answered by the `CV_HEAD` fitted on the other folds: the
    comparison least at the mercy of which ~300 photos a split happens to hold."""
    right = np.zeros(len(labels), bool)
    for fold in range(CV_FOLDS):
        inside = folds != fold
        kernel, bias = heads()[CV_HEAD]((x[inside], labels[inside]), (x[:0], labels[:0]), n_classes)
        right[~inside] = (x[~inside] @ kernel + bias).argmax(axis=1) == labels[~inside]
    return round(float(right.mean()), 4)


def candidates(features: dict[str, Views]) -> Iterable[tuple[str, np.ndarray]]:
    """(name, (N, dims) features) of every combination compared."""
    for set_name, views in features.items():
        for tta, names in TTA.items():
            if all(n in views for n in names):
                yield f"{set_name} {tta}", np.mean([views[n] for n in names], axis=0)
    if "lite0-224" in features and "lite2-260" in features:
        for tta in ("centre", "centre+flip"):
            parts = [np.mean([features[s][n] for n in TTA[tta]], axis=0) for s in ("lite0-224", "lite2-260")]
            yield f"lite0-224+lite2-260 {tta}", np.concatenate(parts, axis=1)


def compare(
    features: dict[str, Views],
    labels: np.ndarray,
    split: np.ndarray,
    n_classes: int,
    folds: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Every candidate with every head: accuracy per split and log loss on validation; with `folds`,
    also each candidate's cross-validated accuracy over all photos."""
    rows = []
    masks = {name: split == name for name in ("train", "validation", "test")}
    for name, x in candidates(features):
        train = (x[masks["train"]], labels[masks["train"]])
        validation = (x[masks["validation"]], labels[masks["validation"]])
        for head_name, head in heads().items():
            started = time.perf_counter()
            kernel, bias = head(train, validation, n_classes)
            row: dict[str, Any] = {"features": name, "head": head_name, "dims": x.shape[1]}
            for split_name, mask in masks.items():
                p = softmax(x[mask] @ kernel + bias)
                row[f"{split_name}_accuracy"] = round(float(np.mean(p.argmax(1) == labels[mask])), 4)
                if split_name != "train":
                    log_loss = -np.mean(np.log(p[np.arange(mask.sum()), labels[mask]] + 1e-12))
                    row[f"{split_name}_log_loss"] = round(float(log_loss), 4)
            row["fit_s"] = round(time.perf_counter() - started, 1)
            if folds is not None and head_name == CV_HEAD:
                row["cv_accuracy"] = cross_validated(x, labels, folds, n_classes)
            log.info("%s", row)
            rows.append(row)
    return rows


def speed(
    feature_set: FeatureSet, representative: list[Path], batches: int = 5, singles: int = 40
) -> list[dict[str, Any]]:
    """LiteRT on 2 threads, float32 against int8: one photo's median latency and photos/s in batches of
    32, with the share of this CPU it uses (GFLOP/s ÷ a NumPy float32 matmul's, measured just before)."""
    from benchmarks.inference import arithmetic_peak
    from inference.lite import LiteModel, convert
    from training.effnet_lite import VARIANTS, build_backbone

    backbone = build_backbone(feature_set.variant, feature_set.size)
    kind = feature_set.views[0]
    pixels = np.stack([view(p, feature_set.size, kind) for p in representative]).astype(np.float32)
    spec = VARIANTS[feature_set.variant]
    gflops = 2 * spec.gmacs * (feature_set.size / spec.native_size) ** 2
    rows = []
    for precision, flatbuffer in (("float32", convert(backbone)), ("int8", convert_int8(backbone, pixels))):
        lite = LiteModel(flatbuffer, threads=2)
        lite.predict_on_batch(pixels[:1])
        single = []
        for index in range(singles):
            started = time.perf_counter()
            lite.predict_on_batch(pixels[index % len(pixels)][None])
            single.append(time.perf_counter() - started)
        batch = pixels[:32]
        lite.predict_on_batch(batch)
        started = time.perf_counter()
        for _ in range(batches):
            lite.predict_on_batch(batch)
        per_s = 32 * batches / (time.perf_counter() - started)
        matmul = arithmetic_peak(1.0).measured_gflops
        rows.append(
            {
                "features": feature_set.name,
                "precision": precision,
                "single_ms": round(float(np.median(single)) * 1000, 1),
                "photos_per_s": round(per_s, 1),
                "gflops_per_photo": round(gflops, 2),
                "matmul_gflops": round(matmul, 1),
                "fraction_of_cpu": round(gflops * per_s / matmul, 3),
            }
        )
        log.info("%s", rows[-1])
    return rows


def quantized_rows(
    rows: list[dict[str, Any]],
    set_name: str,
    floats: Views,
    quantized: Views,
    labels: np.ndarray,
    split: np.ndarray,
    n_classes: int,
) -> list[dict[str, Any]]:
    """For each view combination of `set_name`: its head chosen on float features, fitted on float
    training features, answering from the int8 conversion's features of validation and test photos."""
    made = []
    chosen = {r["features"]: r for r in best_per_features(rows)}  # float rows only
    train, held = split == "train", split != "train"
    for tta, names in TTA.items():
        name = f"{set_name} {tta}"
        if name not in chosen or not all(n in quantized for n in names):
            continue
        x_train = np.mean([floats[n][train] for n in names], axis=0)
        kernel, bias = heads()[chosen[name]["head"]](
            (x_train, labels[train]), (x_train, labels[train]), n_classes
        )
        answers = (np.mean([quantized[n] for n in names], axis=0) @ kernel + bias).argmax(1)
        right = answers == labels[held]
        row = {"features": f"{name} int8", "head": chosen[name]["head"], "dims": int(kernel.shape[0])}
        for s in ("validation", "test"):
            row[f"{s}_accuracy"] = round(float(np.mean(right[split[held] == s])), 4)
        made.append(row)
        log.info("%s", row)
    return made


def best_per_features(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each feature candidate, the head chosen on validation (accuracy, then log loss)."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in (r for r in rows if "validation_log_loss" in r):
        key = (row["validation_accuracy"], -row["validation_log_loss"])
        best = chosen.get(row["features"])
        if best is None or key > (best["validation_accuracy"], -best["validation_log_loss"]):
            chosen[row["features"]] = row
    return sorted(chosen.values(), key=lambda r: (-r["validation_accuracy"], r["validation_log_loss"]))


def _named(name: str) -> FeatureSet:
    return next(s for s in FEATURE_SETS if s.name == name)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: today's model first, then each candidate with its head chosen on validation, then
    the int8 conversions; the cross-validated accuracy (when measured) is the `CV_HEAD`'s."""
    cv = {r["features"]: r["cv_accuracy"] for r in rows if "cv_accuracy" in r}
    today = next(r for r in rows if (r["features"], r["head"]) == ("lite0-224 centre", "recipe"))
    listed = [{**today, "features": "today: lite0-224 centre"}, *best_per_features(rows)]
    listed += [r for r in rows if "validation_log_loss" not in r]
    lines = [
        f"| features | head (chosen on validation) | validation | test | {CV_FOLDS}-fold CV, all photos |",
        "|---|---|---|---|---|",
    ]
    for row in listed:
        folded = cv.get(row["features"])
        lines.append(
            f"| {row['features']} | {row['head']} | {row['validation_accuracy']:.2%} "
            f"| {row['test_accuracy']:.2%} | {'' if folded is None else f'{folded:.2%}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from training.flower_data import list_photos, split_photos

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument(
        "--cache", type=Path, required=True, help="where each feature set's features are kept"
    )
    parser.add_argument("--sets", default=",".join(s.name for s in FEATURE_SETS))
    parser.add_argument(
        "--int8",
        default="",
        help="feature sets also measured through their int8 conversion (validation, test)",
    )
    parser.add_argument(
        "--cv", action="store_true", help=f"also {CV_FOLDS}-fold cross-validation over all photos"
    )
    parser.add_argument("--json", type=Path, help="write every row here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    photo_set = list_photos(args.photos)
    splits = split_photos(photo_set.photos, 10.0, 10.0)
    photos = [p for name in ("train", "validation", "test") for p in splits[name]]
    split = np.array([name for name in ("train", "validation", "test") for _ in splits[name]])
    labels = np.array([photo_set.classes.index(p.label) for p in photos])
    wanted = set(args.sets.split(","))
    features = {
        s.name: extract(s, [p.path for p in photos], args.cache) for s in FEATURE_SETS if s.name in wanted
    }
    folds = np.array([int(p.digest[:8], 16) % CV_FOLDS for p in photos]) if args.cv else None
    rows = compare(features, labels, split, len(photo_set.classes), folds)
    held = split != "train"
    representative = [p.path for p in splits["train"][:: max(1, len(splits["train"]) // 200)]]
    for set_name in [s for s in args.int8.split(",") if s]:
        feature_set = _named(set_name)
        quantized = extract(
            feature_set, [p.path for p, h in zip(photos, held, strict=True) if h], args.cache, representative
        )
        rows += quantized_rows(
            rows, set_name, features[set_name], quantized, labels, split, len(photo_set.classes)
        )
    speeds = [r for name in args.int8.split(",") if name for r in speed(_named(name), representative)]
    print(table(rows))
    for row in speeds:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speed": speeds}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
