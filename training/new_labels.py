"""A label added to a built-in image model from the chat (`/addlabel flowers lavender`), as its retrain
learns it: the new label's output, and what its refusal may accept.

The serving head knows its labels; a new one gets an output of its own, fitted first with every
other output held as it serves (`fit_new_outputs`: a convex fit, a few seconds on cached features), so
the labels the model had keep their answers except where a photo now looks more like the new label.
The retrain's usual fit (`training.retrain_flowers`) then goes on from there when the chat taught
something about the old labels too.

A dozen or two photos are all a new label has beside hundreds per old label, so its output is fitted
on a set of its own (`new_label_set`): its photos and their mirror images together weigh as much as an
old label's photos (weighed like any chat photo, 15 photos are 4% of the flowers' set, and the old outputs
claim most of its unseen photos), and its weights decay more (NEW_LABEL_L2): a smaller weight vector leans on
what the few photos share rather than on what sets each apart. Refitting the old outputs too, on the
same balanced set, cost old flowers and taught the new one less.

The flowers' refusal weighs what the ImageNet network recognises in a photo (`training.imagenet_evidence`):
the ImageNet classes a new label's photos are taken for join the flowers' own (`learned_classes`: the
top class of any of its training photos), and leave again with the label. The flowers' own are the top
class of at least two of 2,342 training photos; asking two of a dozen photos kept too few (measured on
15 tulip photos beside a three-flower model: 3 classes, and 45% of 20 unseen tulips refused; with one
photo, 10 classes and 15% refused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.numpy_fit import adam_update

# Weight decay of a new label's output: more than the head's own (1e-4), which fits a dozen photos'
# particulars; much more lets the new label take old labels' photos. Measured on tulips taught to a
# four-flower model (docs/performance.md, "A label added to the flowers").
NEW_LABEL_L2 = 1e-2
FIT_STEPS = 300  # full-batch Adam steps: measured, the loss stops moving by 200
FIT_LEARNING_RATE = 0.01
MIN_LABEL_PHOTOS = 1  # a class is the new label's when it is the top class of this many of its photos


def start_head(
    kernel: np.ndarray, bias: np.ndarray, known: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The serving head's outputs rearranged for `labels`: a label it knows keeps its output, a
    removed one loses it, a new one starts at zero weights and the smallest bias (rarely chosen)."""
    columns = [list(known).index(label) if label in known else None for label in labels]
    new_kernel = np.zeros((kernel.shape[0], len(labels)), np.float32)
    new_bias = np.full(len(labels), float(np.min(bias)), np.float32)
    for index, column in enumerate(columns):
        if column is not None:
            new_kernel[:, index], new_bias[index] = kernel[:, column], bias[column]
    return new_kernel, new_bias


def new_label_set(
    training: tuple[np.ndarray, np.ndarray, np.ndarray],
    new: Sequence[int],
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The retrain's training set (features, labels, weights), with `extra` examples of the new labels
    (the mirror images of their photos), reweighed so that each new label's examples weigh together as
    much as an average old label's; the old labels' examples keep their weights."""
    x, y, weights = training
    if extra is not None and len(extra[0]):
        x = np.concatenate([x, np.asarray(extra[0], x.dtype)])
        y = np.concatenate([y, np.asarray(extra[1], y.dtype)])
        weights = np.concatenate([weights, np.ones(len(extra[0]), weights.dtype)])
    weights = np.array(weights, np.float64)
    old = ~np.isin(y, list(new))
    per_label = weights[old].sum() / max(1, len(np.unique(y[old])))
    for index in new:
        mask = y == index
        if mask.any():
            weights[mask] = per_label / mask.sum()
    return x, y, weights.astype(np.float32)


def fit_new_outputs(
    training: tuple[np.ndarray, ...],
    start: tuple[np.ndarray, np.ndarray],
    new: Sequence[int],
    l2: float,
    steps: int = FIT_STEPS,
    learning_rate: float = FIT_LEARNING_RATE,
) -> tuple[tuple[np.ndarray, np.ndarray], list[float]]:
    """Fit the outputs `new` (indices) on `training` = (features, labels[, weights]) with weighted
    softmax cross-entropy and L2 weight decay, every other output fixed; returns the head and the
    loss every 10 steps. Convex in the parameters fitted, so it needs no validation split to stop."""
    x = np.asarray(training[0], np.float64)
    y = np.asarray(training[1])
    weights = np.asarray(training[2], np.float64) if len(training) > 2 else np.ones(len(y))
    weights = weights / weights.sum()
    kernel, bias = (np.array(a, np.float64) for a in start)
    new = list(new)
    fixed = np.delete(x @ kernel + bias, new, axis=1)
    others = [i for i in range(bias.shape[0]) if i not in new]
    target = np.zeros((len(y), len(new)))
    for column, index in enumerate(new):
        target[y == index, column] = 1.0
    params = [kernel[:, new], bias[new]]
    moments = [[np.zeros_like(p) for p in params] for _ in range(2)]
    losses = []
    for step in range(1, steps + 1):
        logits = np.concatenate([fixed, x @ params[0] + params[1]], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        error = (probabilities[:, len(others) :] - target) * weights[:, None]
        grads = [x.T @ error + 2.0 * l2 * params[0], error.sum(axis=0)]
        adam_update(params, grads, moments[0], moments[1], step, learning_rate)
        if step % 10 == 0 or step == steps:
            order = others + new  # logits' columns
            right = probabilities[np.arange(len(y)), [order.index(int(label)) for label in y]]
            losses.append(float(-np.sum(weights * np.log(right + 1e-12))))
    kernel[:, new], bias[new] = params
    return (kernel.astype(np.float32), bias.astype(np.float32)), losses


def learned_classes(imagenet_probabilities: np.ndarray, min_photos: int = MIN_LABEL_PHOTOS) -> list[int]:
    """The ImageNet classes a label's training photos are taken for: the top class of at least
    `min_photos` of them."""
    top = np.bincount(np.argmax(imagenet_probabilities, axis=1), minlength=imagenet_probabilities.shape[1])
    return [int(c) for c in np.flatnonzero(top >= min_photos)]


def imagenet_rule(serving: Mapping[str, Any], learned: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The serving version's ImageNet rule (meta["ood"]["imagenet"]) with the classes of the labels
    learned from the chat now: those of labels it learned before and no longer has leave."""
    before = {int(c) for classes in (serving.get("label_classes") or {}).values() for c in classes}
    own = {int(c) for c in serving["flower_classes"]} - before
    rule = dict(serving)
    rule["flower_classes"] = sorted(own | {int(c) for classes in learned.values() for c in classes})
    if learned:
        rule["label_classes"] = {label: sorted(int(c) for c in classes) for label, classes in learned.items()}
    else:
        rule.pop("label_classes", None)
    return rule
