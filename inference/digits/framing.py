"""Framing a digit the MNIST way: fit into 20×20 keeping the aspect ratio, centre by centre of mass in
28×28, thicken thin strokes. Training frames MNIST digits with the same `normalize_digit`."""

from __future__ import annotations

import numpy as np
from PIL import Image

from inference.digits.components import members
from inference.digits.segment import Group


def crop_group(ink: np.ndarray, labels: np.ndarray, group: Group, threshold: float) -> np.ndarray:
    """The group's ink (its own strokes only, with their soft edges) framed like an MNIST digit."""
    pad = 2
    top, bottom = max(0, group.top - pad), min(ink.shape[0], group.bottom + pad)
    left, right = max(0, group.left - pad), min(ink.shape[1], group.right + pad)
    own = members(labels[top:bottom, left:right], [c.index for c in group.members])
    near = max_filter3(own)
    soft = (ink[top:bottom, left:right] - 0.5 * threshold) / (1.0 - 0.5 * threshold)
    return normalize_digit(np.where(near, np.clip(soft, 0.0, 1.0), 0.0))


def normalize_digit(ink: np.ndarray, box: int = 20, size: int = 28) -> np.ndarray:
    """Frame a light-on-black digit the MNIST way: fit into box×box keeping the aspect ratio, then
    centre by centre of mass in size×size. Thin strokes are thickened to MNIST's ~2 px first.

    Used for photos (after `read_digits` found the strokes) and for MNIST digits in training.
    """
    ink = np.asarray(ink, dtype=np.float32)
    if ink.max() > 1.5:  # uint8 MNIST
        ink = ink / 255.0
    rows = np.flatnonzero(ink.max(axis=1) > 0.05)
    cols = np.flatnonzero(ink.max(axis=0) > 0.05)
    if rows.size == 0:
        return np.zeros((size, size), np.float32)
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    scale = box / max(height, width)
    ink = _thicken(ink, scale)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(
        Image.fromarray(ink, mode="F").resize(new_size, Image.Resampling.BILINEAR), np.float32
    )
    fitted = np.clip(fitted, 0.0, 1.0)
    peak = float(fitted.max())
    if 0.0 < peak < 0.9:
        fitted = np.clip(fitted / peak, 0.0, 1.0)
    return _centre_of_mass_place(fitted, size)


def _thicken(ink: np.ndarray, scale: float, target: float = 1.8) -> np.ndarray:
    """Dilate strokes that would come out thinner than `target` pixels after scaling by `scale`."""
    solid = ink > 0.5
    area = int(solid.sum())
    if area == 0 or scale >= 1.0:
        return ink
    eroded = solid.copy()
    eroded[1:-1, 1:-1] &= solid[:-2, 1:-1] & solid[2:, 1:-1] & solid[1:-1, :-2] & solid[1:-1, 2:]
    boundary = int((solid & ~eroded).sum())
    width_now = 2.0 * area / max(boundary, 1)
    grow = target / scale - width_now
    steps = int(min(grow // 2, 6))  # each 3×3 max filter adds two pixels
    if steps <= 0:
        return ink
    for _ in range(steps):
        ink = max_filter3(ink)
    return ink


def max_filter3(values: np.ndarray) -> np.ndarray:
    """3×3 maximum (for a mask: 3×3 dilation), as Pillow's MaxFilter(3) computes it, but separably:
    two passes of shifted maxima instead of Pillow's sort of every pixel's neighbourhood."""
    rows = values.copy()
    rows[:, 1:] = np.maximum(rows[:, 1:], values[:, :-1])
    rows[:, :-1] = np.maximum(rows[:, :-1], values[:, 1:])
    out = rows.copy()
    out[1:] = np.maximum(out[1:], rows[:-1])
    out[:-1] = np.maximum(out[:-1], rows[1:])
    return out


def _centre_of_mass_place(fitted: np.ndarray, size: int) -> np.ndarray:
    height, width = fitted.shape
    total = float(fitted.sum())
    if total <= 0:
        return np.zeros((size, size), np.float32)
    cy = float((fitted.sum(axis=1) * np.arange(height)).sum() / total)
    cx = float((fitted.sum(axis=0) * np.arange(width)).sum() / total)
    # MNIST put the centre of mass at (14, 14) of 0..27 pixel indices (measured: 13.99, 14.01 over the
    # test set), not at the field's geometric middle (13.5): a half-pixel shift costs an MLP a point.
    top = round(size / 2 - cy)
    left = round(size / 2 - cx)
    top = min(max(top, 0), size - height)
    left = min(max(left, 0), size - width)
    out = np.zeros((size, size), np.float32)
    out[top : top + height, left : left + width] = fitted
    return out
