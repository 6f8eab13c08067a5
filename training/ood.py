"""The class-centre "not a flower" detector: class-conditional Gaussians in the backbone's features.

Flower versions are now built with the bank of training photos (`training.photo_bank`), which refuses
more of the photos of other things and keeps more flowers; this detector serves the versions built
before it (FlowerConfig.ood = "centres" still builds one), and its `Thresholds` are shared by both.

Max-softmax is confidently wrong on faces and streets, so the detector looks at the features instead:
the Mahalanobis distance from the photo to the nearest flower class, with one covariance shared by all
classes (fitted on training features). Two choices made it work on these features (measured on
validation flowers vs. synthetic and package non-flower photos, see the README):

- features are L2-normalised first: the overall activation level says little about "flower or not",
  the direction says much;
- the covariance is kept as its top `rank` eigen-directions plus one isotropic variance for the rest
  (the rest is where non-flowers stand out), which is also compact enough to ship: (1280 × 32) numbers.

Thresholds are calibrated on validation flowers (how many may be turned away) and on non-flower
photos made with a different seed from those used for measuring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RANK = 32
SHRINK = 0.1


@dataclass(frozen=True)
class OodParams:
    means: np.ndarray  # (C, D) class centres of the L2-normalised features
    directions: np.ndarray  # (D, rank) top eigenvectors of the shared covariance
    variances: np.ndarray  # (rank,) their variances
    residual_variance: float  # the variance assumed in every other direction

    def whitening(self) -> np.ndarray:
        """P with ||P (u − m)||² = the low-rank Mahalanobis distance; symmetric (D, D)."""
        v = self.directions
        dims = v.shape[0]
        top = (v / np.sqrt(self.variances)) @ v.T
        rest = (np.eye(dims) - v @ v.T) / np.sqrt(self.residual_variance)
        return (top + rest).astype(np.float32)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, C) squared distances of raw backbone features to each class (the NumPy reference)."""
        u = l2_normalise(features)
        deltas = u[:, None, :] - self.means[None]
        projected = deltas @ self.directions
        top = (projected**2 / self.variances).sum(-1)
        rest = ((deltas**2).sum(-1) - (projected**2).sum(-1)) / self.residual_variance
        return top + rest


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def fit_ood(
    features: np.ndarray, labels: np.ndarray, n_classes: int, rank: int = RANK, shrink: float = SHRINK
) -> OodParams:
    """Fit class centres and a shared, shrunk, low-rank-plus-isotropic covariance on training features."""
    u = l2_normalise(features)
    labels = np.asarray(labels)
    means = np.stack([u[labels == c].mean(axis=0) for c in range(n_classes)])
    residuals = u - means[labels]
    covariance = residuals.T @ residuals / len(residuals)
    isotropic = np.trace(covariance) / covariance.shape[0]
    covariance = (1 - shrink) * covariance + shrink * isotropic * np.eye(covariance.shape[0])
    values, vectors = np.linalg.eigh(covariance)  # ascending
    return OodParams(
        means=means.astype(np.float32),
        directions=vectors[:, -rank:].astype(np.float32),
        variances=values[-rank:].astype(np.float32),
        residual_variance=float(values[:-rank].mean()),
    )


@dataclass(frozen=True)
class Thresholds:
    unsure_above: float
    reject_above: float
    min_confidence: float

    def as_meta(self) -> dict[str, float]:
        return {
            "unsure_above": self.unsure_above,
            "reject_above": self.reject_above,
            "min_confidence": self.min_confidence,
        }


def calibrate(
    flower_distances: np.ndarray,
    flower_confidences: np.ndarray,
    other_distances: np.ndarray,
    keep_flowers: float = 0.99,
    other_pass: float = 0.01,
    min_confidence_cap: float = 0.5,
    least_flowers: float = 0.95,
) -> Thresholds:
    """Pick the thresholds from validation flowers and calibration non-flowers (nearest-class distances).

    - `unsure_above`: lets through at most `other_pass` of the calibration non-flowers, but never fewer
      than `least_flowers` nor more than `keep_flowers` of the validation flowers;
    - `reject_above`: halfway (geometrically) between the 99th percentile of flowers and the 5th of
      non-flowers, never below `unsure_above`, so borderline photos get `unsure`, far ones a refusal;
    - `min_confidence`: the 1st percentile of flower confidences, capped, so few real flowers are
      made `unsure` for want of a clear winner.
    """
    low = float(np.quantile(flower_distances, min(least_flowers, keep_flowers)))
    high = float(np.quantile(flower_distances, keep_flowers))
    high_flower = float(np.quantile(flower_distances, 0.99))
    if len(other_distances):
        unsure = float(np.clip(np.quantile(other_distances, other_pass), low, high))
        low_other = float(np.quantile(other_distances, 0.05))
    else:
        unsure, low_other = high, 2 * high_flower
    reject = max(unsure, float(np.sqrt(high_flower * max(low_other, high_flower))))
    confidence = min(min_confidence_cap, float(np.quantile(flower_confidences, 0.01)))
    return Thresholds(unsure_above=unsure, reject_above=reject, min_confidence=confidence)


def save_params(path: Path, params: OodParams) -> None:
    np.savez(
        path,
        ood_means=params.means,
        ood_directions=params.directions,
        ood_variances=params.variances,
        ood_residual_variance=np.float32(params.residual_variance),
    )


def params_from(arrays: dict[str, np.ndarray]) -> OodParams:
    return OodParams(
        means=np.asarray(arrays["ood_means"], np.float32),
        directions=np.asarray(arrays["ood_directions"], np.float32),
        variances=np.asarray(arrays["ood_variances"], np.float32),
        residual_variance=float(arrays["ood_residual_variance"]),
    )
