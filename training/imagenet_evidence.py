"""What the backbone's own ImageNet head says about a photo: evidence that it is not a flower.

The pretrained network knows a thousand kinds of things. A photo of a dishwasher, a kite or a volcano
is, to it, confidently a dishwasher, a kite or a volcano — while the flower photos it saw in training
land on a few plant classes ("daisy", "pot", "bee", "hip" …). So beside the distance to the flower
classes in feature space (`training.ood`), the served model also outputs the ImageNet probabilities,
and a photo is refused when the network is sure of something that no flower photo ever was:

    other = max of the ImageNet probabilities over the classes no flower photo was mostly taken for

`flower_classes` are the ImageNet classes that are the top class of at least `min_photos` training
flower photos; the thresholds on `other` are calibrated on validation flowers, like the distance's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.flowers import other_evidence
from training.numpy_fit import softmax

MIN_PHOTOS = 2  # a class counts as a flower's when it is the top class of this many training photos
KEEP_FLOWERS = 0.993  # validation flowers allowed past the refusal threshold
KEEP_SURE = 0.985  # validation flowers allowed past the "unsure" threshold


@dataclass(frozen=True)
class ImagenetRule:
    """meta["ood"]["imagenet"]: which classes are the flowers', and the thresholds on the rest."""

    flower_classes: tuple[int, ...]
    unsure_above: float
    reject_above: float

    def as_meta(self) -> dict[str, Any]:
        return {
            "flower_classes": list(self.flower_classes),
            "unsure_above": self.unsure_above,
            "reject_above": self.reject_above,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ImagenetRule:
        return cls(
            flower_classes=tuple(int(c) for c in meta["flower_classes"]),
            unsure_above=float(meta["unsure_above"]),
            reject_above=float(meta["reject_above"]),
        )


def imagenet_probabilities(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(N, 1000) softmax of the ImageNet head on backbone features (what the served model outputs)."""
    return softmax(
        np.asarray(features, np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
    )


def fit_rule(
    train_probabilities: np.ndarray,
    validation_probabilities: np.ndarray,
    min_photos: int = MIN_PHOTOS,
    keep_flowers: float = KEEP_FLOWERS,
    keep_sure: float = KEEP_SURE,
) -> ImagenetRule:
    """The flowers' ImageNet classes from training photos; thresholds from validation photos."""
    top = np.bincount(np.argmax(train_probabilities, axis=1), minlength=train_probabilities.shape[1])
    classes = tuple(int(c) for c in np.flatnonzero(top >= min_photos))
    evidence = other_evidence(validation_probabilities, classes)
    reject = float(np.quantile(evidence, keep_flowers))
    unsure = min(reject, float(np.quantile(evidence, keep_sure)))
    return ImagenetRule(classes, unsure_above=unsure, reject_above=reject)
