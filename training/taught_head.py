"""A taught model's head: a softmax regression on the photo's unit features and, beside them, what the
backbone's own ImageNet classifier sees in it.

A dozen photos of a broad label (a dozen dog breeds, a dozen insects) cover little of the feature
space, but the ImageNet network already groups what they show: an unseen breed lands on the dog
breeds' classes too. So the head reads, per photo,

    x = [ u , w · √p ]      u = features / ‖features‖ (1280),  p = ImageNet probabilities (1000)

(√p is a unit vector as u is, so w weighs the two as one), fitted by full-batch Adam on the softmax
cross-entropy with L2 weight decay (convex: the same photos always give the same head). Whether the
ImageNet half helps depends on the labels: it does for broad categories, and it blurs labels the
ImageNet network does not tell apart (five flowers land on a few plant classes). So `choose_weight`
picks w by cross-validation on the taught photos themselves, never on photos the model is judged on.

In the served model the same x is computed from standard Keras layers (`assemble_taught_model`):
√p = unit(softmax(z / 2)) for the ImageNet logits z, so the saved `.keras` file needs no code of ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.adam import adam_update

IMAGENET_WEIGHTS = (0.0, 1.0)  # the candidates for w: the features alone, or both halves as one
L2 = 1e-4  # weight decay: on taught photos held out, 1e-4 and 1e-3 answered alike, 1e-2 worse
STEPS = 300  # full-batch Adam steps; the loss has stopped moving by then
LEARNING_RATE = 0.05
FOLDS = 3  # cross-validation folds per repeat (each label's photos dealt round-robin)
REPEATS = 3  # shuffles of the photos per candidate weight
HEAD_FEATURES = "unit-features+imagenet-sqrt-v1"  # meta["head"]["features"]: how a version's x is made
# The refusal (`refusal_threshold`): score = nearest-photo cosine distance − CONFIDENCE_WEIGHT × the
# head's top probability; refused above the taught photos' highest held-out score + REJECT_SPREAD of
# their standard deviations. Chosen on a development half of real photos (docs/teaching.md).
CONFIDENCE_WEIGHT = 2.0
REJECT_SPREAD = 0.3
UNSURE_QUANTILE = 0.9  # of the taught photos' held-out scores: beyond, the answer is "unsure"


@dataclass(frozen=True)
class ImagenetHead:
    """The backbone's ImageNet classifier: (1280, 1000) kernel and (1000,) bias."""

    kernel: np.ndarray
    bias: np.ndarray

    def root_probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, 1000) √p: the square roots of the ImageNet probabilities, a unit vector per photo."""
        logits = np.asarray(features, np.float64) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        root = np.exp(logits / 2.0)
        return np.asarray(root / np.linalg.norm(root, axis=1, keepdims=True))


def embed(features: np.ndarray, imagenet: ImagenetHead, weight: float) -> np.ndarray:
    """(N, 2280) x = [u, w·√p] / √(1 + w²) of backbone features (N, 1280): a unit vector whatever w,
    so w moves the balance of the halves, never the scale the weight decay sees."""
    features = np.asarray(features, np.float64).reshape(len(features), -1)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    joined = np.hstack([unit, weight * imagenet.root_probabilities(features)])
    return np.asarray(joined / np.sqrt(1.0 + weight**2))


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    l2: float = L2,
    steps: int = STEPS,
    learning_rate: float = LEARNING_RATE,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Softmax regression: (kernel, bias, the mean loss every 10 steps) minimising the mean
    cross-entropy + l2·‖kernel‖², from zero weights (deterministic)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    target = np.eye(n_classes)[y]
    params = [np.zeros((x.shape[1], n_classes)), np.zeros(n_classes)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    losses: list[float] = []
    for step in range(1, steps + 1):
        probabilities = softmax(x @ params[0] + params[1])
        error = (probabilities - target) / len(y)
        grads = [x.T @ error + 2.0 * l2 * params[0], error.sum(axis=0)]
        adam_update(params, grads, first, second, step, learning_rate)
        if step % 10 == 0 or step == steps:
            right = probabilities[np.arange(len(y)), y]
            losses.append(float(-np.mean(np.log(right + 1e-12))))
    return params[0].astype(np.float32), params[1].astype(np.float32), losses


def choose_weight(
    features: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    imagenet: ImagenetHead,
    weights: Sequence[float] = IMAGENET_WEIGHTS,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The weight w whose heads, fitted on part of these photos, best answer the rest (held-out
    accuracy over `REPEATS` shuffles of `FOLDS` folds, stratified by label); returns it and every
    candidate's accuracy. Ties keep the earlier candidate."""
    y = np.asarray(y, np.int64)
    folds = _folds(y, n_classes, seed)
    scores: dict[float, float] = {}
    for weight in weights:
        x = embed(features, imagenet, weight)
        right = []
        for held in folds:
            kernel, bias, _ = fit_softmax(x[~held], y[~held], n_classes)
            right.append((x[held] @ kernel + bias).argmax(axis=1) == y[held])
        scores[float(weight)] = float(np.mean(np.concatenate(right)))
    best = max(scores, key=lambda w: (scores[w], -list(scores).index(w)))
    return best, scores


def held_out_confidence(
    x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0, repeats: int = REPEATS, **fit: Any
) -> np.ndarray:
    """Each photo's top probability from heads fitted without it (the mean over `repeats` shuffles of
    `FOLDS` folds, stratified by label; `fit` as for `fit_softmax`): how sure the served head will be
    of a photo it never saw. One shuffle alone moves the refusal threshold by a photo or two."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    confidence = np.zeros(len(y))
    for held in _folds(y, n_classes, seed, repeats=repeats):
        if not held.any():
            continue
        kernel, bias, _ = fit_softmax(x[~held], y[~held], n_classes, **fit)
        confidence[held] += softmax(x[held] @ kernel + bias).max(axis=1) / repeats
    return confidence


def nearest_other(unit: np.ndarray) -> np.ndarray:
    """Each photo's cosine distance (2 − 2·cos, of unit vectors) to its nearest other photo."""
    similarity = np.asarray(unit, np.float64) @ np.asarray(unit, np.float64).T
    np.fill_diagonal(similarity, -1.0)
    return np.asarray(2.0 - 2.0 * similarity.max(axis=1))


def refusal_score(
    distance: np.ndarray, confidence: np.ndarray, weight: float = CONFIDENCE_WEIGHT
) -> np.ndarray:
    """The refusal score (higher: refuse sooner) of photos at these nearest-photo distances whose top
    answer has this probability: a far photo the head hesitates on is the likeliest to be none of its
    labels, and an unseen photo of a label the head is sure of may stand far from the few taught."""
    return np.asarray(distance, np.float64) - weight * np.asarray(confidence, np.float64)


def refusal_threshold(scores: np.ndarray, spread: float = REJECT_SPREAD) -> tuple[float, float]:
    """(unsure above, refused above) from the taught photos' held-out scores, the only sample a
    taught model has: refused beyond the highest of them by `spread` of their standard deviation
    (a dozen photos per label rarely include the most unusual of a broad label), unsure beyond the
    `UNSURE_QUANTILE` of them."""
    scores = np.asarray(scores, np.float64)
    reject = float(scores.max() + spread * scores.std())
    return min(float(np.quantile(scores, UNSURE_QUANTILE)), reject), reject


def _folds(y: np.ndarray, n_classes: int, seed: int, repeats: int = REPEATS) -> list[np.ndarray]:
    """Held-out masks: each repeat deals every label's photos, shuffled, round-robin into FOLDS."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(repeats):
        fold = np.zeros(len(y), np.int64)
        for label in range(n_classes):
            members = rng.permutation(np.flatnonzero(y == label))
            fold[members] = np.arange(len(members)) % FOLDS
        masks += [fold == k for k in range(FOLDS)]
    return masks


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def assemble_taught_model(backbone: Any, head: Any, imagenet: ImagenetHead, weight: float) -> Any:
    """The serving model: pixels → [probabilities of the taught labels, nearest-photo distances].

    `head` is a `training.flower_model.FlowerHead` whose kernel reads x = [u, w·√p] and whose
    detector centres are the taught photos (see `training.retrain_taught`)."""
    import keras

    from training.effnet_lite0 import image_input
    from training.flower_model import distance_layers

    pixels = image_input()
    features = backbone(pixels)
    unit = keras.layers.UnitNormalization(name="taught_unit")(features)
    half = keras.layers.Dense(1000, activation="softmax", name="imagenet_half")(features)
    root = keras.layers.UnitNormalization(name="imagenet_root")(half)  # √p = unit(softmax(z / 2))
    weighted = keras.layers.Rescaling(float(weight), name="imagenet_weight")(root)
    joined = keras.layers.Rescaling(1.0 / float(np.sqrt(1.0 + weight**2)), name="taught_features")(
        keras.layers.Concatenate(name="taught_joined")([unit, weighted])
    )
    n_classes = head.bias.shape[0]
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(joined)
    distances = distance_layers(features, head.ood.means.shape[0])
    model = keras.Model(pixels, [probabilities, distances], name="taught")
    model.get_layer("imagenet_half").set_weights([imagenet.kernel / 2.0, imagenet.bias / 2.0])
    model.get_layer("probabilities").set_weights([head.kernel, head.bias])
    whitening = head.ood.whitening()
    centres = head.ood.means @ whitening
    model.get_layer("ood_whiten").set_weights([whitening])
    model.get_layer("ood_cross").set_weights(
        [(-2.0 * centres.T).astype(np.float32), (centres**2).sum(1).astype(np.float32)]
    )
    return model
