"""Handwriting style for MNIST training digits: the ways other writers' digits differ from MNIST's.

MNIST's writers share a style: plain 1s, 7s without a bar, medium pens, upright or mildly slanted. People
sending photos write 1s with a flag and a base, 7s crossed in the middle, with thick markers or fine
pens, slanted and narrow or wide. `restyle` redraws one MNIST training digit in another style, before
it is framed by the serving code (`normalize_digit`) or rendered as a photo by `training.synth_photos`,
so what the model learns is what serving will hand it:

- a flag and sometimes a base on 1s, a crossbar on 7s (drawn with the digit's own stroke width);
- slant (shear), aspect (narrower or wider), a small rotation, and an elastic distortion (Simard et al.,
  2003: a smoothed random displacement field), all in one resampling;
- stroke thickness: grey dilation or erosion.

The augmentation in `training.augment` still runs on the framed digits in the `tf.data` pipeline
(shifts, zoom, stroke blending); this module changes the handwriting itself and is plain NumPy + Pillow.
Only MNIST's training digits go through it; evaluation sets never do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from inference.digits import normalize_digit
from inference.digits.framing import max_filter3

logger = logging.getLogger(__name__)

UPSCALE = 2  # work at 56×56: strokes ~5 px wide, so one dilation step is a fine change of pen
MARGIN = 14  # room for shear and distortion to move ink without cutting it


@dataclass(frozen=True)
class Style:
    """How far `restyle` may move a digit from MNIST's style; `random_style` draws within these."""

    flag_on_one: float = 0.5  # share of 1s given a flag at the top
    base_on_one: float = 0.25  # share of flagged 1s also given a base
    bar_on_seven: float = 0.35  # share of 7s crossed in the middle
    shear: float = 0.35  # x += shear · y, uniform in ±shear (slant of ~±19°)
    aspect: tuple[float, float] = (0.7, 1.35)  # width scale, log-uniform
    rotation: float = 8.0  # degrees, uniform in ±rotation
    elastic: float = 0.6  # share of digits distorted elastically
    elastic_alpha: float = 1.8  # displacement in pixels at 56 px (before smoothing's normalisation)
    elastic_sigma: float = 5.0  # smoothness of the displacement field, pixels at 56 px
    thicker: int = 2  # at most this many 3×3 dilations …
    thinner: int = 2  # … or erosions (never erasing more than half of the ink)


DEFAULT_STYLE = Style()


def restyle(
    image: np.ndarray, label: int, rng: np.random.Generator, style: Style = DEFAULT_STYLE
) -> np.ndarray:
    """One MNIST digit (uint8 28×28, light on black) redrawn in another writer's style: float32 in
    [0, 1], light on black, larger than 28×28 (frame it with `normalize_digit`)."""
    ink = _enlarged(image)
    if label == 1 and rng.random() < style.flag_on_one:
        ink = _one_with_flag(ink, rng, base=rng.random() < style.base_on_one)
    elif label == 7 and rng.random() < style.bar_on_seven:
        ink = _crossed_seven(ink, rng)
    ink = _warped(ink, rng, style)
    return _restroked(ink, rng, style)


def restyled_digits(
    images: np.ndarray, labels: np.ndarray, seed: int, style: Style = DEFAULT_STYLE
) -> np.ndarray:
    """Every digit restyled once and framed like a served crop: (N, 28, 28) float32."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            normalize_digit(restyle(image, int(label), rng, style))
            for image, label in zip(images, labels, strict=True)
        ]
    )


def restyled_uint8(
    image: np.ndarray, label: int, rng: np.random.Generator, style: Style = DEFAULT_STYLE
) -> np.ndarray:
    """`restyle` as a uint8 light-on-black image, the input `training.synth_photos` draws as ink."""
    return (np.clip(restyle(image, label, rng, style), 0.0, 1.0) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ pieces


def _enlarged(image: np.ndarray) -> np.ndarray:
    side = image.shape[0] * UPSCALE
    big = Image.fromarray(np.asarray(image, np.float32) / 255.0, mode="F").resize(
        (side, side), Image.Resampling.BICUBIC
    )
    return np.pad(np.clip(np.asarray(big, np.float32), 0.0, 1.0), MARGIN)


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: the inked area over half its boundary's length."""
    solid = ink > 0.5
    inner = solid.copy()
    inner[1:-1, 1:-1] &= solid[:-2, 1:-1] & solid[2:, 1:-1] & solid[1:-1, :-2] & solid[1:-1, 2:]
    boundary = int((solid & ~inner).sum())
    return 2.0 * int(solid.sum()) / max(boundary, 1)


def _drawn(ink: np.ndarray, lines: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> np.ndarray:
    """The ink with these strokes added, as wide as the digit's own strokes."""
    width = max(2, round(_stroke_width(ink)))
    canvas = Image.new("F", (ink.shape[1], ink.shape[0]), 0.0)
    draw = ImageDraw.Draw(canvas)
    for start, end in lines:
        draw.line([start, end], fill=1.0, width=width)
    # Soften the new strokes' edges like the bicubic-enlarged digit's.
    soft = np.asarray(canvas.resize((ink.shape[1] // 2, ink.shape[0] // 2), Image.Resampling.BOX), np.float32)
    soft_full = Image.fromarray(soft, mode="F").resize(
        (ink.shape[1], ink.shape[0]), Image.Resampling.BILINEAR
    )
    return np.maximum(ink, np.clip(np.asarray(soft_full, np.float32), 0.0, 1.0))


def _extent(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(ink.max(axis=1) > 0.5)
    cols = np.flatnonzero(ink.max(axis=0) > 0.5)
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _row_centre(ink: np.ndarray, row: int) -> float:
    cols = np.flatnonzero(ink[row] > 0.5)
    return float(cols.mean())


def _one_with_flag(ink: np.ndarray, rng: np.random.Generator, *, base: bool) -> np.ndarray:
    """A 1 written the continental way: a flag from its top down to the left, sometimes a base."""
    extent = _extent(ink)
    if extent is None:
        return ink
    top, bottom, _, _ = extent
    height = bottom - top + 1
    x_top = _row_centre(ink, top)
    length = height * rng.uniform(0.18, 0.36)
    angle = math.radians(rng.uniform(25, 60))  # below the horizontal
    lines = [((x_top, top + 1), (x_top - length * math.cos(angle), top + 1 + length * math.sin(angle)))]
    if base:
        x_bottom = _row_centre(ink, bottom)
        half = height * rng.uniform(0.18, 0.3)
        lines.append(((x_bottom - half, bottom - 1), (x_bottom + half, bottom - 1)))
    return _drawn(ink, lines)


def _crossed_seven(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 7 with a bar across its stem, a little above or below the middle."""
    extent = _extent(ink)
    if extent is None:
        return ink
    top, bottom, _, _ = extent
    height = bottom - top + 1
    row = round(top + height * rng.uniform(0.45, 0.62))
    if not (ink[row] > 0.5).any():
        return ink
    x = _row_centre(ink, row)
    half = height * rng.uniform(0.15, 0.25)
    tilt = height * rng.uniform(-0.04, 0.04)
    return _drawn(ink, [((x - half, row + tilt), (x + half, row - tilt))])


def _warped(ink: np.ndarray, rng: np.random.Generator, style: Style) -> np.ndarray:
    """Slant, aspect, rotation and (sometimes) an elastic distortion, in one bilinear resampling."""
    height, width = ink.shape
    shear = rng.uniform(-style.shear, style.shear)
    aspect = math.exp(rng.uniform(math.log(style.aspect[0]), math.log(style.aspect[1])))
    turn = math.radians(rng.uniform(-style.rotation, style.rotation))
    # Output pixel → source pixel: the inverse of (rotate · shear · scale x), about the centre.
    forward = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]]) @ np.array(
        [[aspect, shear], [0.0, 1.0]]
    )
    inverse = np.linalg.inv(forward)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    u, v = xs - cx, ys - cy
    src_x = inverse[0, 0] * u + inverse[0, 1] * v + cx
    src_y = inverse[1, 0] * u + inverse[1, 1] * v + cy
    if rng.random() < style.elastic:
        dx, dy = (_smooth_field(rng, (height, width), style.elastic_sigma) for _ in range(2))
        scale = style.elastic_alpha * UPSCALE / max(float(np.abs(np.concatenate([dx, dy])).max()), 1e-6)
        src_x = src_x + dx * scale
        src_y = src_y + dy * scale
    return _bilinear(ink, src_y, src_x)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    field = np.apply_along_axis(np.convolve, 0, field, taps, mode="same")
    return np.apply_along_axis(np.convolve, 1, field, taps, mode="same")


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample `image` at fractional (ys, xs); outside it is black."""
    height, width = image.shape
    padded = np.pad(image, 1)
    ys = np.clip(ys + 1, 0, height + 0.999)
    xs = np.clip(xs + 1, 0, width + 0.999)
    y0, x0 = np.floor(ys).astype(np.int32), np.floor(xs).astype(np.int32)
    fy, fx = ys - y0, xs - x0
    y1, x1 = np.minimum(y0 + 1, height + 1), np.minimum(x0 + 1, width + 1)
    top = padded[y0, x0] * (1 - fx) + padded[y0, x1] * fx
    bottom = padded[y1, x0] * (1 - fx) + padded[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _restroked(ink: np.ndarray, rng: np.random.Generator, style: Style) -> np.ndarray:
    """Thicker or thinner strokes: up to `thicker` 3×3 dilations or `thinner` erosions (an erosion that
    would take more than half of the ink, as on a digit already written with a fine pen, is not made)."""
    steps = int(rng.integers(-style.thinner, style.thicker + 1))
    if steps > 0:
        for _ in range(steps):
            ink = max_filter3(ink)
    elif steps < 0:
        solid = float((ink > 0.5).sum())
        for _ in range(-steps):
            thinner = -max_filter3(-ink)
            if (thinner > 0.5).sum() < 0.5 * solid:  # a fine pen, not a broken digit
                break
            ink = thinner
    return ink
