"""The small convex fits done in NumPy without Keras (a taught model's head, a new label's outputs):
one Adam step, the same everywhere (β1 0.9, β2 0.999, ε 1e-8), and the softmax that turns a head's
logits into its answers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def adam_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    first: Sequence[np.ndarray],
    second: Sequence[np.ndarray],
    step: int,
    learning_rate: float,
) -> None:
    """Move `params` in place by step `step` (from 1), keeping the moments `first`/`second` in place."""
    for p, g, m, v in zip(params, grads, first, second, strict=True):
        m *= 0.9
        m += 0.1 * g
        v *= 0.999
        v += 0.001 * g**2
        p -= learning_rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, shifted by each row's largest for stability."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))
