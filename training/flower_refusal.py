"""The "not a flower" detector a flower head gets: fitted on its training photos, cut on validation.

Two detectors exist (FlowerConfig.ood): the bank of training photos (`training.photo_bank`, the
default: a photo is measured against the training photos nearest to it) and the class centres with a
shared covariance (`training.ood`, what versions before it were built with). `photobot train flowers`
and `retrain` both fit a version's detector here, so a retrain keeps the kind its serving version has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training import photo_bank
from training.ood import OodParams, Thresholds, calibrate, fit_ood
from training.photo_bank import PhotoBank, bank_thresholds, fit_photo_bank

PHOTOS = "photos"
CENTRES = "centres"
CENTRES_METHOD = "mahalanobis-l2-lowrank"


@dataclass(frozen=True)
class Detector:
    params: OodParams | PhotoBank  # what the served graph's distances output is built from
    thresholds: Thresholds
    meta: dict[str, Any]  # meta["ood"], but for the ImageNet rule


def kind_of(ood_meta: dict[str, Any]) -> str:
    """The detector kind of a version's meta["ood"]."""
    return PHOTOS if ood_meta.get("method") == photo_bank.METHOD else CENTRES


def fit_detector(
    kind: str,
    train: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    calibration: np.ndarray,
    confidences: np.ndarray,
    others: np.ndarray,
    *,
    rank: int,
    keep_flowers: float,
    other_pass: float,
) -> Detector:
    """The detector of `kind` fitted on `train` (features, class indices) with its cuts from the
    `calibration` flowers' features and their answers' `confidences`; the class-centre detector also
    places its `unsure` cut by the synthetic non-flower features `others`."""
    if kind == PHOTOS:
        bank = fit_photo_bank(*train, n_classes=n_classes)
        thresholds, second_look = bank_thresholds(bank, calibration, confidences)
        meta = {
            "method": photo_bank.METHOD,
            "bank": bank.meta(),
            **thresholds.as_meta(),
            "second_look": second_look,
        }
        return Detector(bank, thresholds, meta)
    if kind != CENTRES:
        raise ValueError(f"unknown detector {kind!r}: {PHOTOS} or {CENTRES}")
    ood = fit_ood(*train, n_classes=n_classes, rank=rank)
    thresholds = calibrate(
        ood.distances(calibration).min(axis=1),
        confidences,
        ood.distances(others).min(axis=1) if len(others) else np.zeros(0),
        keep_flowers=keep_flowers,
        other_pass=other_pass,
    )
    return Detector(ood, thresholds, {"method": CENTRES_METHOD, "rank": rank, **thresholds.as_meta()})
