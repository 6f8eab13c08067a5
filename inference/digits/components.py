"""Connected components of a boolean mask: the strokes, each with its box and area."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Component:
    """A connected set of ink pixels, with the numbers the grouping rules need."""

    index: int
    area: int
    top: int
    left: int
    bottom: int  # exclusive
    right: int  # exclusive

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def label_components(mask: np.ndarray) -> tuple[np.ndarray, list[Component]]:
    """8-connected components of a boolean mask, from its horizontal runs and a vectorised union-find.

    Returns a label image (0 = background, components numbered from 1) and the components' stats.
    """
    height, width = mask.shape
    rows, starts, ends = runs(mask)  # ends exclusive
    count = len(rows)
    if count == 0:
        return np.zeros((height, width), np.int32), []
    stride = width + 2
    start_keys = rows * stride + starts
    end_keys = rows * stride + ends
    # A run in row y touches the runs of row y-1 with end >= start and start <= end (8-connectivity).
    low = np.searchsorted(end_keys, (rows - 1) * stride + starts, side="left")
    high = np.searchsorted(start_keys, (rows - 1) * stride + ends, side="right")
    high = np.maximum(high, low)
    touching = high - low
    first = np.repeat(np.arange(count), touching)
    offsets = np.arange(touching.sum()) - np.repeat(np.cumsum(touching) - touching, touching)
    second = np.repeat(low, touching) + offsets
    same_row_above = rows[second] == rows[first] - 1
    roots = _union_find(count, first[same_row_above], second[same_row_above])
    n, component_of_run = _dense_ranks(roots)
    lengths = ends - starts
    label_of_pixel = np.repeat(component_of_run + 1, lengths).astype(np.int32)
    pixel_offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat_index = np.repeat(rows * width + starts, lengths) + pixel_offsets
    labels = np.zeros(height * width, np.int32)
    labels[flat_index] = label_of_pixel
    area = np.bincount(component_of_run, weights=lengths, minlength=n).astype(int)
    top = np.full(n, height)
    np.minimum.at(top, component_of_run, rows)
    bottom = np.zeros(n, int)
    np.maximum.at(bottom, component_of_run, rows + 1)
    left = np.full(n, width)
    np.minimum.at(left, component_of_run, starts)
    right = np.zeros(n, int)
    np.maximum.at(right, component_of_run, ends)
    components = [
        Component(i + 1, int(area[i]), int(top[i]), int(left[i]), int(bottom[i]), int(right[i]))
        for i in range(n)
    ]
    return labels.reshape(height, width), components


def _dense_ranks(values: np.ndarray) -> tuple[int, np.ndarray]:
    """How many distinct values, and each value's rank among them: np.unique(return_inverse=True) for
    small non-negative integers, from a table instead of a sort."""
    present = np.zeros(int(values.max()) + 1, bool)
    present[values] = True
    ranks = np.cumsum(present) - 1
    return int(ranks[-1]) + 1, ranks[values]


def _union_find(count: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Root (smallest member) of each node's set, given edges; label propagation with pointer jumping."""
    parent = np.arange(count)
    if len(first) == 0:
        return parent
    while True:
        low = np.minimum(parent[first], parent[second])
        before = parent.copy()
        np.minimum.at(parent, first, low)
        np.minimum.at(parent, second, low)
        np.minimum.at(parent, before[first], low)
        np.minimum.at(parent, before[second], low)
        while True:  # pointer jumping: every node points at its root
            jumped = parent[parent]
            if (jumped == parent).all():
                break
            parent = jumped
        if (parent == before).all():
            return parent


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start and (exclusive) end of every horizontal run of a boolean mask.

    Each row is padded with a zero at both ends, so on the flattened image the changes alternate
    within rows — a run's start, then its end — and one pass finds them all.
    """
    height, width = mask.shape
    stride = width + 2
    padded = np.zeros((height, stride), bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1])  # on booleans: np.diff would widen them to int8
    starts, ends = changes[0::2], changes[1::2]
    return starts // stride, starts % stride, ends % stride


def members(labels: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """Where `labels` is one of `indices`: a table lookup (np.isin sorts on every call)."""
    wanted = np.asarray(indices, dtype=np.intp)
    table = np.zeros(max(int(labels.max(initial=0)), int(wanted.max(initial=0))) + 1, bool)
    table[wanted] = True
    found: np.ndarray = table[labels]
    return found
