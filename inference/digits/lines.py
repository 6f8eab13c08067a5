"""Erasing ruled and squared-paper lines from the stroke mask without cutting the strokes that cross them."""

from __future__ import annotations

import numpy as np

from inference.digits.components import label_components, members, runs
from inference.digits.quantiles import median


def remove_ruled_lines(mask: np.ndarray, guide: np.ndarray | None = None, reach: int = 2) -> np.ndarray:
    """Erase long thin horizontal structures that span most of the width (ruled paper, table edges).

    A line is found in `guide` (default: the mask) smeared vertically by `reach` pixels, so slightly
    tilted lines still form long horizontal runs. Its pixels are erased from the mask where the mask
    is no thicker than the lines: a stroke crossing a line, or written along it, stays whole.
    """
    height, width = mask.shape
    guide = mask if guide is None else guide
    shortest = max(12, width // 10)
    if int(np.count_nonzero(guide, axis=1).max(initial=0)) * (2 * reach + 1) < shortest:
        return mask  # no row holds enough ink for a line, even a tilted one
    smeared = guide.copy()
    for shift in range(1, reach + 1):
        smeared[shift:] |= guide[:-shift]
        smeared[:-shift] |= guide[shift:]
    # Lines are thin across: a thick stroke is never part of one, even where a line runs into it.
    thin = smeared & ~_in_vertical_runs(smeared, 2 * reach + 7)
    # Along the rows from here on, on the transposed image: shifting whole rows of a C-ordered array
    # copies contiguous memory, shifting its columns does not.
    thin_t = np.ascontiguousarray(thin.T)
    bridged_t = thin_t.copy()  # close the gaps that noise, crossing lines and strokes leave in a line
    for shift in range(1, 5):
        bridged_t[shift:] |= thin_t[:-shift]
        bridged_t[:-shift] |= thin_t[shift:]
    long_runs = _in_vertical_runs(bridged_t, shortest).T
    if not long_runs.any():
        return mask
    labels, parts = label_components(long_runs)
    # A line spans most of the page, or runs off its edge (where a digit interrupts it, the pieces do).
    lines = [
        p
        for p in parts
        if p.height <= max(6, height // 12)
        and (p.width >= 0.6 * width or (p.width >= shortest and (p.left == 0 or p.right == width)))
    ]
    if not lines:
        return mask
    line_band = members(labels, [p.index for p in lines])
    # Erase only what is as thin as the lines themselves: where a stroke crosses a line, or runs along
    # it, the ink there is thicker than the line, and stays.
    thickness = _vertical_run_lengths(guide)
    on_lines = thickness[guide & line_band]
    if on_lines.size == 0:
        return mask
    line_thickness = median(on_lines)
    return mask & ~(line_band & (thickness <= line_thickness + 1))


def _vertical_run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each pixel of `mask`, the length of the vertical run it belongs to (0 off the mask)."""
    columns = mask.T
    count, height = columns.shape
    cols, starts, ends = runs(columns)
    lengths = ends - starts
    out = np.zeros(count * height, np.int32)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(cols * height + starts, lengths) + offsets] = np.repeat(lengths, lengths)
    return out.reshape(count, height).T


def _in_vertical_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """The pixels of `mask` that belong to vertical runs of at least `length` pixels.

    A pixel is in such a run when some window of `length` pixels around it is all set: the windows
    are found by doubling (`length` 32 takes five shifted ANDs of whole rows) and spread back over
    their pixels the same way — a few whole-image operations instead of a per-run loop.
    """
    height = mask.shape[0]
    if length > height:
        return np.zeros_like(mask)
    starts = mask.copy()  # starts[i]: mask[i : i + covered] is all set
    covered = 1
    while covered < length:
        step = min(covered, length - covered)
        starts[: height - step] &= starts[step:]
        starts[height - step :] = False
        covered += step
    inside = starts  # inside[i]: a window starts within `covered` pixels above i
    covered = 1
    while covered < length:
        step = min(covered, length - covered)
        inside[step:] |= inside[: height - step]  # NumPy buffers overlapping operands
        covered += step
    return inside
