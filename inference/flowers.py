"""Flowers: the photo → model input adapter, and the model outputs → answer rule.

The served flower model (built by `training.effnet_lite0`) takes (N, 224, 224, 3) float32 pixel values
0..255 — scaling to [-1, 1] happens inside the model — and returns two outputs per photo:

    probabilities  (n_classes,)  softmax over the labels of meta["labels"]
    distances      (P,)          2 − 2·cos of the photo's features to each training photo of the bank
                                 (`training.photo_bank`), or, for a model with the class-centre
                                 detector (`training.ood`), squared Mahalanobis distance to each class

"Is this a flower at all?" is answered in feature space, not by the softmax (which is confidently
wrong on faces and streets): the distance to the nearest class is compared with thresholds calibrated
on validation flowers. With a bank (meta["ood"]["bank"]: its photos per class), a class's distance is
the mean distance to its nearest training photos (`class_neighbour_distances`); with class centres it
is the model's own output. The thresholds live in meta["ood"]. (A model whose second output is a
feature vector instead may put class centres in meta["ood"]["means"]; the distance is then computed
here, as plain squared Euclidean distance to the nearest centre.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from inference.model_store import ModelVersion
from inference.prediction import Prediction, Status
from inference.second_look import distance_figure, second_look

log = logging.getLogger(__name__)

PREPROCESSING_ID = "flowers-rgb-short256-center224-uint8-v1"
RESIZE_SHORTER = 256
CROP = 224
TOP_K = 5
PHOTOS_PER_NEIGHBOUR = 16  # a bank class's distance averages one neighbour in this many of its photos


def flower_input(image: Image.Image) -> np.ndarray:
    """Shorter side to 256 (bilinear, antialiased), centre crop 224: (224, 224, 3) uint8 RGB."""
    image = image.convert("RGB")
    width, height = image.size
    scale = RESIZE_SHORTER / min(width, height)
    size = (max(RESIZE_SHORTER, round(width * scale)), max(RESIZE_SHORTER, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    return np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.uint8)


@dataclass(frozen=True)
class OodRule:
    """The out-of-distribution detector's numbers (meta["ood"]); see `training.ood`."""

    means: np.ndarray | None  # (C, k): when given, outputs[1] are features and distances are computed here
    unsure_above: float  # distance above which the answer is `unsure`
    reject_above: float  # distance above which the photo is `not_recognized`
    min_confidence: float  # a flower answer below this softmax probability is `unsure`
    # What the ImageNet head may say (meta["ood"]["imagenet"], see `training.imagenet_evidence`): the
    # classes flower photos were taken for, and thresholds on the largest probability of any other.
    flower_classes: tuple[int, ...] = ()
    other_unsure_above: float = 1.0
    other_reject_above: float = 1.0
    # A bank's photos per class, in the order of the distances output, and the most neighbours a
    # class's distance averages (`class_neighbour_distances`); empty: the output is per class.
    bank_counts: tuple[int, ...] = ()
    neighbours: int = 0
    # A taught model's refusal score is its nearest-photo distance minus this many times the answer's
    # probability (`training.taught_head.refusal_score`): far photos the head is unsure of go first.
    confidence_weight: float = 0.0

    @classmethod
    def from_meta(cls, ood: dict[str, Any]) -> OodRule:
        means = ood.get("means")
        imagenet = ood.get("imagenet") or {}
        bank = ood.get("bank") or {}
        return cls(
            means=None if means is None else np.asarray(means, dtype=np.float64),
            unsure_above=float(ood["unsure_above"]),
            reject_above=float(ood["reject_above"]),
            min_confidence=float(ood["min_confidence"]),
            flower_classes=tuple(int(c) for c in imagenet.get("flower_classes", ())),
            other_unsure_above=float(imagenet.get("unsure_above", 1.0)),
            other_reject_above=float(imagenet.get("reject_above", 1.0)),
            bank_counts=tuple(int(c) for c in bank.get("counts", ())),
            neighbours=int(bank.get("neighbours", 0)),
            confidence_weight=float(ood.get("confidence_weight", 0.0)),
        )

    def other(self, outputs: Sequence[np.ndarray]) -> float:
        """The ImageNet head's largest probability for a class no flower was taken for (0 without it)."""
        if len(outputs) < 3 or not self.flower_classes:
            return 0.0
        imagenet = np.asarray(outputs[2], dtype=np.float64).reshape(1, -1)
        return float(other_evidence(imagenet, self.flower_classes)[0])

    def nearest(self, second_output: np.ndarray) -> float:
        """Distance to the nearest class: from the bank's photos, the model's own per-class distances,
        or features vs `means`."""
        if self.bank_counts:
            per_class = class_neighbour_distances(second_output[None, :], self.bank_counts, self.neighbours)
            return float(per_class.min())
        if self.means is None:
            return float(np.min(second_output))
        deltas = self.means - second_output[None, :]
        return float(np.min(np.einsum("ck,ck->c", deltas, deltas)))


def flowers_prediction(
    outputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], version: ModelVersion
) -> Prediction:
    """Turn one photo's model outputs `[probabilities, distances]` (each (C,) or (1, C)) into an answer
    of the model `version` belongs to: every image classifier of the catalogue answers through here.

    `ok` needs a photo close enough to the flowers seen in training and a clear enough winner;
    a far photo is `not_recognized` (label None), a borderline one `unsure` (label kept as a guess);
    then `second_look` may still refuse it, when two weaker signs agree.
    """
    if isinstance(outputs, Mapping):
        names = ("probabilities", "distances", "imagenet")
        outputs = [outputs[name] for name in names if name in outputs]
    probabilities = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
    labels = version.labels
    if len(labels) != probabilities.size:
        name = f"{version.name} v{version.version}"
        raise ValueError(f"{name}: {probabilities.size} outputs for {len(labels)} labels")
    order = np.argsort(-probabilities)[:TOP_K]
    shown = calibrated(probabilities, version.meta)
    top = tuple((labels[i], float(shown[i])) for i in order)
    best_label, confidence = labels[order[0]], float(probabilities[order[0]])
    rule = OodRule.from_meta(version.meta["ood"])
    nearest = rule.nearest(np.asarray(outputs[1], dtype=np.float64).reshape(-1))
    distance = nearest - rule.confidence_weight * confidence
    other = rule.other(outputs)
    status: Status
    if distance > rule.reject_above:
        status, label = "not_recognized", None
        reason = f"not one of the known {version.name} ({_beyond(distance, rule.reject_above)})"
    elif other > rule.other_reject_above:
        status, label = "not_recognized", None
        reason = f"the network sees something else in it ({other:.0%} > {rule.other_reject_above:.0%})"
    elif distance > rule.unsure_above:
        status, label = "unsure", best_label
        reason = f"unlike the {version.name} seen in training ({_beyond(distance, rule.unsure_above)})"
    elif other > rule.other_unsure_above:
        status, label = "unsure", best_label
        reason = f"the network half sees something else ({other:.0%} > {rule.other_unsure_above:.0%})"
    elif confidence < rule.min_confidence:
        status, label = "unsure", best_label
        reason = f"no clear winner ({confidence:.0%} < {rule.min_confidence:.0%})"
    else:
        status, label, reason = "ok", best_label, None
    prediction = Prediction(
        model=version.name,
        version=version.version,
        label=label,
        confidence=top[0][1] if label is not None else 0.0,
        status=status,
        top=top,
        reason=reason,
    )
    return second_look(prediction, outputs, version.meta, nearest)


def calibrated(probabilities: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """The percentages to show: softmax(logits / T) for the version's `meta["calibration"]`
    temperature T (a taught model's, fitted on its photos' held-out answers), else the probabilities
    as they are. The refusal reads the probabilities as the model gives them: its rule was placed on
    those."""
    temperature = float((meta.get("calibration") or {}).get("temperature", 1.0))
    if temperature == 1.0:
        return probabilities
    scaled = np.log(np.maximum(probabilities, 1e-300)) / temperature
    scaled = np.exp(scaled - scaled.max())
    return np.asarray(scaled / scaled.sum())


def _beyond(distance: float, limit: float) -> str:
    return f"distance {distance_figure(distance)} > {distance_figure(limit)}"


def class_neighbours(count: int, most: int) -> int:
    """How many of a class's nearest bank photos its distance averages: one in `PHOTOS_PER_NEIGHBOUR`,
    at most `most`, so a label taught from a few photos is measured against a few of its own."""
    return max(1, min(most, count // PHOTOS_PER_NEIGHBOUR))


def class_neighbour_distances(distances: np.ndarray, counts: Sequence[int], most: int) -> np.ndarray:
    """(N, C) from (N, P) distances to the bank's photos, sorted by class with `counts` per class: the
    mean of each class's `class_neighbours` smallest."""
    distances = np.asarray(distances, dtype=np.float64)
    if distances.shape[1] != sum(counts):
        raise ValueError(f"{distances.shape[1]} distances for a bank of {sum(counts)} photos")
    columns, start = [], 0
    for count in counts:
        k = class_neighbours(count, most)
        block = distances[:, start : start + count]
        columns.append(np.partition(block, k - 1, axis=1)[:, :k].mean(axis=1))
        start += count
    return np.stack(columns, axis=1)


def other_evidence(probabilities: np.ndarray, flower_classes: Sequence[int]) -> np.ndarray:
    """(N,) the largest ImageNet probability outside the flowers' classes: how sure the pretrained
    network is that a photo shows some other kind of thing (see `training.imagenet_evidence`)."""
    others = np.array(probabilities, dtype=np.float64, copy=True)
    others[:, list(flower_classes)] = 0.0
    return np.asarray(others.max(axis=1))
