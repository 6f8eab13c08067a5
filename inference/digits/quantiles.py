"""Medians and quantiles of small arrays, as NumPy computes them, without its sorting overhead."""

from __future__ import annotations

import numpy as np


def median(values: np.ndarray) -> float:
    """The median of a 1-d array (as np.median)."""
    return percentile_of(values, 0.5)


def percentile_of(values: np.ndarray, q: float) -> float:
    """The q-quantile of unsorted values, as `percentile`: a partition around the two ranks it needs
    costs a fraction of sorting thousands of stroke pixels."""
    below = int(q * (len(values) - 1))
    return percentile(np.partition(values, (below, min(below + 1, len(values) - 1))), q)


def percentile(ordered: np.ndarray, q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly between ranks (np.percentile's default)."""
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    low, high = float(ordered[below]), float(ordered[above])
    return low + (high - low) * (position - below)
