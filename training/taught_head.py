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

Each taught photo's mirror image is fitted beside it. The refusal (`TaughtPhotos`, `refusal_score`)
compares a photo with every taught photo and mirror image, in features and in the ImageNet network's
flattened view, and is placed by the taught photos held out (`refusal_threshold`).

In the served model the same x is computed from standard Keras layers (`assemble_taught_model`):
√p = unit(softmax(z / 2)) for the ImageNet logits z, so the saved `.keras` file needs no code of ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.numpy_fit import adam_update, softmax

IMAGENET_WEIGHTS = (0.0, 1.0)  # the candidates for w: the features alone, or both halves as one
L2 = 1e-4  # weight decay: on taught photos held out, 1e-4 and 1e-3 answered alike, 1e-2 worse
STEPS = 300  # full-batch Adam steps; the loss has stopped moving by then
LEARNING_RATE = 0.05
FOLDS = 3  # cross-validation folds per repeat (each label's photos dealt round-robin)
REPEATS = 3  # shuffles of the photos per candidate weight
# Shuffles averaged for the refusal's held-out confidence: with 3, the threshold moved by up to ±0.03
# with the shuffle drawn, a tenth or more of the photos of none refused or not; 10 cost ~1 s for 4 × 12.
REFUSAL_REPEATS = 10
HEAD_FEATURES = "unit-features+imagenet-sqrt-v1"  # meta["head"]["features"]: how a version's x is made
# The refusal (`TaughtPhotos`, `refusal_threshold`): score = the distance to the nearest taught photo
# (cosine of the features, + NEAREST_VIEW_WEIGHT × cosine of the ImageNet views) − CONFIDENCE_WEIGHT ×
# the head's top probability; refused above the mean of the taught photos' held-out scores + REJECT_SPREAD
# of their standard deviations. Not their highest score: the highest of N photos climbs as N grows, so a
# model would refuse less the more it was taught. Chosen on a development half of real photos
# (docs/teaching.md).
CONFIDENCE_WEIGHT = 1.0
NEAREST_VIEW_WEIGHT = 0.5
VIEW_TEMPERATURE = 4.0  # the ImageNet view unit(p^(1/4)): flatter than √p, it keeps a class's neighbours
REJECT_SPREAD = 2.1
UNSURE_QUANTILE = 0.9  # of the taught photos' held-out scores: beyond, the answer is "unsure"


@dataclass(frozen=True)
class ImagenetHead:
    """The backbone's ImageNet classifier: (1280, 1000) kernel and (1000,) bias."""

    kernel: np.ndarray
    bias: np.ndarray

    def root_probabilities(self, features: np.ndarray, power: float = 2.0) -> np.ndarray:
        """(N, 1000) p^(1/power) made unit length (√p by default: already a unit vector) per photo."""
        logits = np.asarray(features, np.float64) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        root = np.exp(logits / power)
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
    masks = folds(y, n_classes, seed)
    scores: dict[float, float] = {}
    for weight in weights:
        x = embed(features, imagenet, weight)
        right = []
        for held in masks:
            kernel, bias, _ = fit_softmax(x[~held], y[~held], n_classes)
            right.append((x[held] @ kernel + bias).argmax(axis=1) == y[held])
        scores[float(weight)] = float(np.mean(np.concatenate(right)))
    best = max(scores, key=lambda w: (scores[w], -list(scores).index(w)))
    return best, scores


@dataclass(frozen=True)
class HeldOut:
    """What heads fitted without each photo said of it, over `repeats` shuffles of `FOLDS` folds."""

    logits: np.ndarray  # (R, C): every held-out answer, R = N × repeats
    photo: np.ndarray  # (R,) the photo each row answers
    truth: np.ndarray  # (N,) the photos' labels
    repeats: int

    def confidence(self, temperature: float = 1.0) -> np.ndarray:
        """(N,) each photo's mean top probability at `temperature`: how sure the served head will be
        of a photo it never saw."""
        top = softmax(self.logits / temperature).max(axis=1)
        return np.bincount(self.photo, weights=top, minlength=len(self.truth)) / self.repeats

    @property
    def answers(self) -> np.ndarray:
        """(N,) each photo's held-out answer: the label of its mean probabilities."""
        probabilities = softmax(self.logits)
        summed = np.zeros((len(self.truth), self.logits.shape[1]))
        np.add.at(summed, self.photo, probabilities)
        return np.asarray(summed.argmax(axis=1), np.int64)

    @property
    def right(self) -> float:
        """The share of held-out answers that were right, over every shuffle and fold."""
        if len(self.photo) == 0:
            return 0.0
        return float(np.mean(self.logits.argmax(axis=1) == self.truth[self.photo]))


def cross_validate(
    views: Sequence[np.ndarray],
    y: np.ndarray,
    n_classes: int,
    seed: int = 0,
    repeats: int = REFUSAL_REPEATS,
    **fit: Any,
) -> HeldOut:
    """Heads fitted without each photo, over `repeats` shuffles of `FOLDS` folds stratified by label
    (`fit` as for `fit_softmax`). `views[0]` are the photos' x, the others (their mirror images) are
    fitted beside them and left out with them. Few shuffles move the refusal threshold with the shuffle
    drawn; every photo held out in turn judges a dozen photos a label far better than a quarter of
    them held out once."""
    views = [np.asarray(x, np.float64) for x in views]
    y = np.asarray(y, np.int64)
    logits, photos = [], []
    for held in folds(y, n_classes, seed, repeats=repeats):
        if not held.any():
            continue
        train = np.vstack([x[~held] for x in views])
        kernel, bias, _ = fit_softmax(train, np.tile(y[~held], len(views)), n_classes, **fit)
        logits.append(views[0][held] @ kernel + bias)
        photos.append(np.flatnonzero(held))
    if not logits:
        return HeldOut(np.zeros((0, n_classes)), np.zeros(0, np.int64), y, repeats)
    return HeldOut(np.vstack(logits), np.concatenate(photos), y, repeats)


@dataclass(frozen=True)
class TaughtPhotos:
    """What the refusal compares a photo with: every view of every taught photo (the photo and its
    mirror image), as unit features and as the ImageNet network's view of it, unit(p^(1/4)).

    The nearest-photo distance alone cannot tell an unseen breed, far from the dozen taught, from a
    teapot; what the ImageNet network sees can: its flattened probabilities put an unseen breed beside
    the taught breeds' neighbouring classes, a teapot elsewhere."""

    unit: np.ndarray  # (M, 1280)
    view: np.ndarray  # (M, 1000)
    photo: np.ndarray  # (M,) the taught photo each row is a view of

    @classmethod
    def of(cls, views: Sequence[np.ndarray], imagenet: ImagenetHead) -> TaughtPhotos:
        """`views`: (N, 1280) backbone features of the N taught photos, then of their mirror images…"""
        features = np.vstack([np.asarray(v, np.float64) for v in views])
        photo = np.tile(np.arange(len(views[0])), len(views))
        return cls(_unit(features), imagenet.root_probabilities(features, VIEW_TEMPERATURE), photo)

    def distance(
        self, features: np.ndarray, imagenet: ImagenetHead, own: np.ndarray | None = None
    ) -> np.ndarray:
        """(N,) 2 − 2·cos to the nearest taught photo's features + NEAREST_VIEW_WEIGHT × (1 − cos) to
        the nearest one's ImageNet view; `own[i]`: a taught photo the i-th is not compared with (itself)."""
        features = np.asarray(features, np.float64)
        near_features = _unit(features) @ self.unit.T
        near_view = imagenet.root_probabilities(features, VIEW_TEMPERATURE) @ self.view.T
        if own is not None:
            mine = np.asarray(own)[:, None] == self.photo[None, :]
            near_features[mine], near_view[mine] = -1.0, -1.0
        return np.asarray(
            2.0 - 2.0 * near_features.max(axis=1) + NEAREST_VIEW_WEIGHT * (1.0 - near_view.max(axis=1))
        )


def refusal_score(
    distance: np.ndarray, confidence: np.ndarray, weight: float = CONFIDENCE_WEIGHT
) -> np.ndarray:
    """The refusal score (higher: refuse sooner) of photos at these `TaughtPhotos` distances whose top
    answer has this probability: a far photo the head hesitates on is the likeliest to be none of its
    labels, and an unseen photo of a label the head is sure of may stand far from the few taught."""
    return np.asarray(distance, np.float64) - weight * np.asarray(confidence, np.float64)


def refusal_threshold(scores: np.ndarray, spread: float = REJECT_SPREAD) -> tuple[float, float]:
    """(unsure above, refused above) from the taught photos' held-out scores, the only sample a
    taught model has: refused beyond their mean by `spread` of their standard deviation (a dozen
    photos per label rarely include the most unusual of a broad label), unsure beyond the
    `UNSURE_QUANTILE` of them. Both estimate where the scores of the labels' photos lie, which more
    photos sharpen but do not move; the highest score would climb with every photo taught."""
    scores = np.asarray(scores, np.float64)
    reject = float(scores.mean() + spread * scores.std())
    return min(float(np.quantile(scores, UNSURE_QUANTILE)), reject), reject


def folds(y: np.ndarray, n_classes: int, seed: int, repeats: int = REPEATS) -> list[np.ndarray]:
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


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def assemble_taught_model(
    backbone: Any, head: Any, imagenet: ImagenetHead, weight: float, photos: TaughtPhotos
) -> Any:
    """The serving model: pixels → [probabilities of the taught labels, (1,) distance to the taught
    photos (`TaughtPhotos.distance`)], from standard Keras layers only.

    `head` is a `training.flower_model.FlowerHead` whose kernel reads x = [u, w·√p]."""
    import keras

    from training.effnet_lite0 import image_input

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
    flat = keras.layers.Dense(1000, activation="softmax", name="imagenet_view")(features)
    view = keras.layers.UnitNormalization(name="imagenet_view_unit")(flat)  # unit(softmax(z / 4))
    nearest = keras.layers.Concatenate(name="nearest_cosines")(
        [_nearest_cosine(unit, photos.unit, "photo"), _nearest_cosine(view, photos.view, "view")]
    )
    distance = keras.layers.Dense(1, name="distances")(nearest)
    model = keras.Model(pixels, [probabilities, distance], name="taught")
    model.get_layer("imagenet_half").set_weights([imagenet.kernel / 2.0, imagenet.bias / 2.0])
    model.get_layer("probabilities").set_weights([head.kernel, head.bias])
    model.get_layer("imagenet_view").set_weights(
        [imagenet.kernel / VIEW_TEMPERATURE, imagenet.bias / VIEW_TEMPERATURE]
    )
    for name, references in (("photo", photos.unit), ("view", photos.view)):
        model.get_layer(f"cosines_{name}").set_weights([references.T.astype(np.float32)])
    # 2 − 2·cos + ν·(1 − cos′) of the nearest ones, as `TaughtPhotos.distance`
    model.get_layer("distances").set_weights(
        [
            np.array([[-2.0], [-NEAREST_VIEW_WEIGHT]], np.float32),
            np.array([2.0 + NEAREST_VIEW_WEIGHT], np.float32),
        ]
    )
    return model


def _nearest_cosine(unit: Any, references: np.ndarray, name: str) -> Any:
    """(N, 1) the largest cosine of these unit vectors with any of the references (M, D)."""
    import keras

    cosines = keras.layers.Dense(len(references), use_bias=False, name=f"cosines_{name}")(unit)
    column = keras.layers.Reshape((len(references), 1), name=f"cosines_{name}_column")(cosines)
    return keras.layers.GlobalMaxPooling1D(name=f"nearest_{name}")(column)
