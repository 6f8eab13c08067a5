"""Finding the ink on the paper: the paper's brightness under uneven light, removed, and the rest scaled.

Steps 1 to 4 of `inference.digits`: a grayscale working image; the polarity (dark ink on paper, or chalk
on a board); the paper's brightness block by block (a robust quadratic surface plus a median-filtered
correction), subtracted and divided out; a threshold relative to the strongest marks and the noise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from inference.digits.quantiles import median, percentile_of

WORK_SIDE = 320  # longer side of the working image


def working_gray(image: Image.Image | np.ndarray) -> np.ndarray:
    """Grayscale float32 in [0, 1] with the longer side at most WORK_SIDE (box-filtered down)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode != "L":
        image = image.convert("L")
    longer = max(image.size)
    if longer > WORK_SIDE:
        scale = WORK_SIDE / longer
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32) * (1.0 / 255.0)


@dataclass(frozen=True)
class InkMap:
    """How much ink each pixel holds: about 1 on strokes, about 0 on the paper, whatever the lighting."""

    ink: np.ndarray  # float32, normalised by the strongest marks' strength
    threshold: float  # on `ink`: a stroke pixel is above it
    significant: (
        np.ndarray
    )  # bool: clearly beyond the sensor noise where the pixel is (dark areas are noisier)

    def strokes(self, relative: float = 1.0) -> np.ndarray:
        """Pixels with ink above `relative` × threshold that stand out from the noise."""
        return self.significant & (self.ink > relative * self.threshold)


def ink_map(gray: np.ndarray) -> tuple[InkMap | None, str | None]:
    """Remove the background, decide the polarity, and scale the ink; or say why there is no ink."""
    blocks = _blocks(gray)
    if blocks is None:
        return None, "the photo is too small"
    cells, grid = blocks
    # The paper is the bright majority of a block under dark ink (the dark one under chalk): a high
    # quantile still sees it in a block that a thick stroke mostly covers.
    dark_ink, paper = _dark_ink(gray, cells, grid)
    background = _smooth_background(paper, grid)
    if _unlike_paper(paper.values, background, grid) > 0.2:
        return None, "this does not look like writing on a page (a scene or an object)"
    residual = background - gray if dark_ink else gray - background
    noise = _robust_sigma(residual)  # the sensor's noise, the same in light and shadow
    # Paper reflects light and ink absorbs a fraction of it: dividing by the paper's brightness makes a
    # stroke in the shadow count as much as one in the light (chalk: by the room left to white).
    reflectance = np.maximum(background if dark_ink else 1.0 - background, 0.15)
    signal = np.divide(residual, reflectance, out=reflectance)  # in place: full-size arrays are the cost
    significant = residual > max(4.0 * noise, 0.02)
    candidates = signal[significant & (residual > 5.0 * noise)]
    if candidates.size < 12:
        return None, "no marks stand out from the paper"
    # The strongest marks set the scale: a high quantile, so that many faint ruled lines around a
    # small digit do not pull the threshold down into the noise.
    strength = percentile_of(candidates, 0.99)
    if strength < 0.1:
        return None, "the marks are too faint to read"
    scale = 1.0 / (0.8 * strength)
    threshold = max(0.35 * strength, 0.05) * scale
    signal *= scale
    return InkMap(ink=signal, threshold=threshold, significant=significant), None


def _unlike_paper(paper: np.ndarray, background: np.ndarray, grid: _Grid) -> float:
    """The fraction of blocks whose paper is far (> 0.08) from the smooth background surface.

    A page under any light is one smooth surface: almost no block strays (a digit filling the frame
    with thick strokes, the worst case measured, makes ~20% stray). A scene of objects in many shades
    has blocks off the surface everywhere (over 20% in 60% of the synthetic scenes).
    """
    half = grid.side // 2
    centres = background[grid.top + half :: grid.side, grid.left + half :: grid.side][
        : grid.rows, : grid.cols
    ]
    return float((np.abs(paper - centres) > 0.08).mean())


def estimate_background(gray: np.ndarray) -> np.ndarray:
    """The paper's brightness under the lighting (see `ink_map`), for inspection and tests."""
    blocks = _blocks(gray)
    if blocks is None:
        return np.full_like(gray, float(np.median(gray)))
    cells, grid = blocks
    _, paper = _dark_ink(gray, cells, grid)
    return _smooth_background(paper, grid)


def off_the_page(gray: np.ndarray, tolerance: float) -> float:
    """The share of blocks whose paper is more than `tolerance` off one smooth surface (0 when the
    photo is too small to tell).

    The quadratic surface of `_dark_ink`, before `_smooth_background` lets large-scale structure back
    in: a page under any light lies on it but for the few blocks a stroke fills or a shadow's edge
    crosses; a photograph (a face, a wall, the sky's gradient behind a tower) strays from it by a few
    grey levels almost everywhere, however plain it looks block by block.
    """
    blocks = _blocks(gray)
    if blocks is None:
        return 0.0
    cells, grid = blocks
    _, paper = _dark_ink(gray, cells, grid)
    return float((np.abs(paper.values - grid.surface(paper.coefficients)) > tolerance).mean())


def _block_quantiles(cells: np.ndarray, quantiles: Sequence[float]) -> list[np.ndarray]:
    """The quantiles of each block's pixels (nearest rank), from one sort of every block.

    One vectorised (SIMD) sort serves every quantile, where np.median or a partition would each redo it.
    """
    ordered = np.sort(cells, axis=2)
    count = cells.shape[2]
    return [ordered[:, :, min(count - 1, int(q * count))] for q in quantiles]


def _blocks(gray: np.ndarray, count: int = 16) -> tuple[np.ndarray, _Grid] | None:
    """The photo cut into square blocks, `count` along the longer side: (rows, cols, pixels), and the grid."""
    height, width = gray.shape
    side = max(4, round(max(height, width) / count))
    if height // side < 3 or width // side < 3:
        return None
    grid = _grid(height, width, side)
    trimmed = gray[grid.top : grid.top + grid.rows * side, grid.left : grid.left + grid.cols * side]
    cells = (
        trimmed.reshape(grid.rows, side, grid.cols, side)
        .transpose(0, 2, 1, 3)
        .reshape(grid.rows, grid.cols, -1)
    )
    return cells, grid


@dataclass(frozen=True, eq=False)
class _Grid:
    """The block grid of one photo size, and all about it that does not depend on the pixels.

    `_grid` builds it once per size (the bot sees a handful of sizes): the quadratic surface's terms at
    the blocks' centres, and the bilinear weights that spread values at the centres over the pixels.
    """

    top: int
    left: int
    side: int
    rows: int
    cols: int
    terms: np.ndarray  # (rows * cols, 6): `_quadratic_terms` at the blocks' centres
    ring_terms: np.ndarray  # the same with a ring of blocks beyond each edge: ((rows + 2) * (cols + 2), 6)
    spread_rows: _Spread  # from the ringed grid's rows to the pixel rows
    spread_cols: _Spread  # from its columns to the pixel columns

    def surface(self, coefficients: np.ndarray) -> np.ndarray:
        """The quadratic surface at the blocks' centres, (rows, cols)."""
        values: np.ndarray = self.terms @ coefficients
        return values.reshape(self.rows, self.cols)

    def upsample(self, ringed: np.ndarray) -> np.ndarray:
        """Values at the ringed grid's centres, bilinearly interpolated at every pixel (float32).

        Along the columns first, while the array is a few rows: then the photo-sized pass gathers whole
        rows (contiguous copies) instead of columns of every row.
        """
        columns = self.spread_cols.apply(ringed.astype(np.float32), axis=1)
        return self.spread_rows.apply(columns, axis=0)


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int, side: int) -> _Grid:
    rows, cols = height // side, width // side
    top, left = (height - rows * side) // 2, (width - cols * side) // 2
    return _Grid(
        top=top,
        left=left,
        side=side,
        rows=rows,
        cols=cols,
        terms=_quadratic_terms(*_block_centres(top, left, side, height, width, rows, cols)),
        ring_terms=_quadratic_terms(*_block_centres(top, left, side, height, width, rows, cols, ring=1)),
        spread_rows=_Spread.bilinear(rows + 2, side, side - top, height),
        spread_cols=_Spread.bilinear(cols + 2, side, side - left, width),
    )


def _block_centres(
    top: int, left: int, side: int, height: int, width: int, rows: int, cols: int, ring: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the blocks' centres (and `ring` more blocks beyond each edge), [-1, 1] across the photo."""
    centre_y = (top + side * (np.arange(-ring, rows + ring) + 0.5)) / height * 2.0 - 1.0
    centre_x = (left + side * (np.arange(-ring, cols + ring) + 0.5)) / width * 2.0 - 1.0
    grid_y, grid_x = np.meshgrid(centre_y, centre_x, indexing="ij")
    return grid_x.ravel(), grid_y.ravel()


def _quadratic_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The terms of a quadratic surface in x and y: its value is `terms @ coefficients`."""
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


@dataclass(frozen=True, eq=False)
class _Spread:
    """Linear interpolation from values at a few points to many pixels: each pixel mixes two neighbours,
    `values[first] * near + values[second] * far`.

    Two gathers and a multiply-add, not a matrix product: NumPy hands products this size to a
    multithreaded BLAS whose spinning threads would burn the CPU that the other photos need.
    """

    first: np.ndarray  # (pixels,) index of the value before the pixel
    second: np.ndarray  # (pixels,) the one after it (the last value stands in at the far end)
    near: np.ndarray  # (pixels,) float32 weights of values[first]
    far: np.ndarray  # (pixels,) float32 weights of values[second]

    @classmethod
    def bilinear(cls, count: int, side: int, offset: int, size: int) -> _Spread:
        """How Pillow's bilinear resize spreads `count` values, one per `side` pixels, over pixels
        `offset` … `offset + size` (Pillow itself computes the weights: it resizes the identity)."""
        identity = Image.fromarray(np.eye(count, dtype=np.float32), mode="F")
        weights = np.asarray(
            identity.resize((count * side, count), Image.Resampling.BILINEAR), dtype=np.float32
        )
        weights = np.vstack([weights, np.zeros_like(weights[:1])])[:, offset : offset + size]
        first = np.minimum((weights > 0).argmax(axis=0), count - 1)
        pixels = np.arange(size)
        return cls(
            first, np.minimum(first + 1, count - 1), weights[first, pixels], weights[first + 1, pixels]
        )

    def apply(self, values: np.ndarray, axis: int) -> np.ndarray:
        """Interpolate along `axis` of a 2-d array."""
        near, far = (self.near[:, None], self.far[:, None]) if axis == 0 else (self.near, self.far)
        out = np.take(values, self.first, axis=axis)  # in place from here: photo-sized along axis 0
        out *= near
        beyond = np.take(values, self.second, axis=axis)
        beyond *= far
        out += beyond
        return out


@dataclass(frozen=True)
class _PaperFit:
    """The blocks' paper values and the robust quadratic surface through them (fitted once, used twice)."""

    values: np.ndarray  # (rows, cols)
    coefficients: np.ndarray  # of the quadratic surface (see `_quadratic_terms`)
    inliers: np.ndarray  # bool (rows * cols,): the blocks the surface kept


def _dark_ink(gray: np.ndarray, cells: np.ndarray, grid: _Grid) -> tuple[bool, _PaperFit]:
    """True when the marks are darker than the paper (ink on paper), False for chalk on a board; and the
    blocks' paper values on that side (their 0.8 quantile under ink, 0.2 under chalk) with their fit.

    First, which side of the blocks is the smooth paper: under dark ink the blocks' high quantiles
    lie on one smooth surface (only blocks almost filled by a stroke stray) while their low quantiles
    stray wherever a stroke passes; under chalk the reverse. When both sides are smooth (thin strokes)
    the extreme small details decide: thin strokes are far off their surroundings, while lighting
    that the surface misses (a shadow's edge, vignetting) changes too slowly to count.
    """
    stray, sides = [], []
    for side in _block_quantiles(cells, (0.8, 0.2)):
        coefficients, inliers = _robust_quadratic(grid.terms, side.ravel())
        stray.append(float(np.abs(side - grid.surface(coefficients)).mean()))
        sides.append(_PaperFit(side, coefficients, inliers))
    high, low = stray
    if max(high, low) > 1.6 * min(high, low) and abs(high - low) > 0.004:
        return high < low, sides[0] if high < low else sides[1]
    dark = _darker_details(gray)
    return dark, sides[0] if dark else sides[1]


def _darker_details(gray: np.ndarray) -> bool:
    """Thin strokes: are the darkest small details stronger than the lightest (what a 17×17 box blur
    takes away)? Lighting (a shadow's edge, vignetting) varies too slowly to leave much there.

    In whole grey levels, so one histogram gives both tails.
    """
    pixels = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(pixels).filter(ImageFilter.BoxBlur(8)))
    detail = pixels.astype(np.int16) - blurred.astype(np.int16)  # -255 … 255
    counts = np.bincount((detail + 255).ravel(), minlength=511)
    k = max(4, int(0.0007 * detail.size))
    cumulative = np.cumsum(counts)
    darkest = int(np.searchsorted(cumulative, k + 1)) - 255  # the (k+1)-th smallest
    lightest = int(np.searchsorted(cumulative, detail.size - k)) - 255  # the (k+1)-th largest
    return -darkest >= lightest


def _smooth_background(paper: _PaperFit, grid: _Grid) -> np.ndarray:
    """A smooth surface through the blocks' paper values, out to the very corners.

    The quadratic surface that `_dark_ink` fitted to the blocks, dropping those that disagree (full of
    ink), models gradients and vignetting; what it misses on a large scale (a shadow's edge) is added
    back from the 5×5 median of the residuals of the blocks it kept, so blocks full of ink add nothing.
    The sum is formed on the block grid (plus a ring of blocks beyond the edges) and upsampled once.
    """
    values, coefficients = paper.values, paper.coefficients
    residual = np.where(paper.inliers.reshape(values.shape), values - grid.surface(coefficients), 0.0)
    correction = _edge_ring(_median_filter(residual.astype(np.float32), 5))
    ringed = (grid.ring_terms @ coefficients).reshape(grid.rows + 2, grid.cols + 2) + correction
    return grid.upsample(ringed)


def _edge_ring(grid: np.ndarray) -> np.ndarray:
    """`grid` with a ring of its edge values around it (np.pad's "edge" mode, minus its per-call overhead)."""
    rows = np.clip(np.arange(-1, grid.shape[0] + 1), 0, grid.shape[0] - 1)
    cols = np.clip(np.arange(-1, grid.shape[1] + 1), 0, grid.shape[1] - 1)
    ring: np.ndarray = grid[rows[:, None], cols]
    return ring


def _robust_quadratic(terms: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares quadratic surface, refitted without the outliers (ink blocks) a few times.

    Returns the coefficients and which values were kept as inliers.
    """
    keep = np.ones(len(values), bool)
    coefficients = np.zeros(6)
    for _ in range(4):
        # lstsq, not the normal equations (half the cost): the kept blocks can be degenerate (one row
        # of them), where lstsq still gives the smallest surface and a solve fails or explodes.
        coefficients = np.linalg.lstsq(terms[keep], values[keep], rcond=None)[0]
        residual = np.abs(values - terms @ coefficients)
        spread = 1.4826 * median(residual[keep])
        new_keep = residual <= max(3.0 * spread, 0.015)
        if np.count_nonzero(new_keep) < 8 or (new_keep == keep).all():
            break
        keep = new_keep
    return coefficients, keep


def _median_filter(grid: np.ndarray, size: int) -> np.ndarray:
    """size×size median with the edges repeated (Pillow's rank filter: the same values as NumPy's)."""
    return np.asarray(Image.fromarray(grid, mode="F").filter(ImageFilter.MedianFilter(size)), np.float32)


def _robust_sigma(values: np.ndarray) -> float:
    sample = (values[::3, ::3] if values.ndim == 2 else values).ravel()
    centre = median(sample)
    return max(1.4826 * median(np.abs(sample - np.float32(centre))), 0.005)
