"""The "not a flower" detector by neighbours: how far a photo is from each class's own training photos.

The class-centre detector (`training.ood`) sums a class up as one centre and a covariance shared by all
classes. A photo of something else can land near a centre while no training photo is near it, and a
real flower of an unusual look can stand far from its centre while close to a few photos like it. So
this detector keeps every training photo: a photo's distance to a class is the mean cosine distance
(2 − 2·cos of unit features) to its `NEIGHBOURS` nearest training photos of that class, and its
distance is that of the nearest class (deep nearest neighbours, Sun et al. 2022).

The served graph is the class-centre one without its whitening (`training.flower_model.distance_layers`):
every photo of the bank is a centre, so the model's `distances` output is 2 − 2·cos to each photo of
the bank, sorted by class; `inference.flowers.OodRule` averages the nearest
of each class (`class_neighbour_distances`: one in sixteen of its photos, at most `NEIGHBOURS`, so a
label taught from twenty photos is measured against its nearest two). The bank ships as float16
(2,342 × 1,280: ~6 MB), which is what the neighbours need and more than a covariance's 0.2 MB.

The cuts are shares of the validation flowers kept, where the class-centre detector's cuts fell on the
same photos: refused beyond the 99th percentile, `unsure` beyond the 97th, and the second look's two
tiers (`inference.second_look`) at the 97th and the 96.5th.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.flowers import class_neighbour_distances
from training.ood import Thresholds, l2_normalise

METHOD = "photo-neighbours-cosine"
NEIGHBOURS = 25  # of a class's ~470 training photos: one in twenty
KEEP_SURE = 0.97  # validation flowers kept `ok` by the distance
KEEP = 0.99  # validation flowers not refused by the distance
SECOND_LOOK_KEEP = 0.97  # the second look's refusal tier starts beyond this share of them
DOUBT_KEEP = 0.965  # … and its `unsure` tier beyond this one
MIN_CONFIDENCE_CAP = 0.5  # as `training.ood.calibrate`


@dataclass(frozen=True)
class PhotoBank:
    """The training photos' unit features, sorted by class: what the served graph compares a photo to."""

    features: np.ndarray  # (P, D)
    counts: tuple[int, ...]  # photos per class, in class order
    neighbours: int = NEIGHBOURS

    @property
    def means(self) -> np.ndarray:
        """The served graph's centres: one per photo of the bank (unwhitened: 2 − 2·cos to each)."""
        return self.features

    def photo_distances(self, features: np.ndarray) -> np.ndarray:
        """(N, P) what the served graph outputs: ||u − b||² to each photo b of the bank (u: unit)."""
        bank = np.asarray(self.features, np.float64)
        return 1.0 - 2.0 * l2_normalise(features) @ bank.T + (bank**2).sum(axis=1)[None, :]

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, C) each photo's distance to each class (the NumPy reference of the served answer)."""
        return class_neighbour_distances(self.photo_distances(features), self.counts, self.neighbours)

    def meta(self) -> dict[str, Any]:
        """meta["ood"]["bank"]: what `inference.flowers.OodRule` needs to read the distances output."""
        return {"counts": list(self.counts), "neighbours": self.neighbours}

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "bank_features": self.features.astype(np.float16),
            "bank_counts": np.asarray(self.counts, np.int64),
            "bank_neighbours": np.asarray(self.neighbours, np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PhotoBank:
        return cls(
            features=np.asarray(arrays["bank_features"], np.float32),
            counts=tuple(int(c) for c in arrays["bank_counts"]),
            neighbours=int(arrays["bank_neighbours"]),
        )


def fit_photo_bank(features: np.ndarray, labels: np.ndarray, n_classes: int) -> PhotoBank:
    """The bank of these training photos (float16-rounded, as it ships); a photo given twice (a chat
    photo repeated for its weight) is one photo of the bank."""
    _, first = np.unique(np.asarray(features), axis=0, return_index=True)
    first = np.sort(first)
    labels = np.asarray(labels)[first]
    unit = l2_normalise(np.asarray(features)[first])
    order = np.argsort(labels, kind="stable")
    counts = tuple(int((labels == c).sum()) for c in range(n_classes))
    if not all(counts):
        raise ValueError(f"every class needs training photos in the bank, got {counts}")
    bank = unit[order].astype(np.float16).astype(np.float32)
    return PhotoBank(features=bank, counts=counts)


def bank_thresholds(
    bank: PhotoBank, validation: np.ndarray, confidences: np.ndarray
) -> tuple[Thresholds, dict[str, float]]:
    """The cuts from validation flowers' features and their answers' confidences: the thresholds, and
    the second look's (meta["ood"]["second_look"])."""
    nearest = bank.distances(validation).min(axis=1)
    thresholds = Thresholds(
        unsure_above=float(np.quantile(nearest, KEEP_SURE)),
        reject_above=float(np.quantile(nearest, KEEP)),
        min_confidence=min(MIN_CONFIDENCE_CAP, float(np.quantile(confidences, 0.01))),
    )
    second_look = {
        "refuse_above": float(np.quantile(nearest, SECOND_LOOK_KEEP)),
        "doubt_above": float(np.quantile(nearest, DOUBT_KEEP)),
    }
    return thresholds, second_look
