"""`read_digits`: a photo in, MNIST-like crops of the digits on it out (or why there are none).

The steps, each in its own module: find the ink on the paper (`paper`), erase ruled lines (`lines`), cut
the strokes into connected components (`components`), group them into a row of digits (`segment`), and
frame each digit the MNIST way (`framing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from inference.digits.components import label_components
from inference.digits.framing import crop_group
from inference.digits.lines import remove_ruled_lines
from inference.digits.paper import ink_map, working_gray
from inference.digits.segment import digit_row, drop_border_and_specks, group_by_columns, implausible

PREPROCESSING_ID = "digits-photo-v1"

DECODE_SIZE = 240  # shorter side to ask of `decode_image(target_size=…)`: JPEG draft decodes near this


@dataclass(frozen=True)
class DigitCrops:
    """What `read_digits` found: one MNIST-like crop per digit, left to right, or why there are none.

    `boxes` are the digits' bounding boxes (left, top, right, bottom) as fractions of the photo's width
    and height, for drawing or debugging.
    """

    crops: np.ndarray  # float32 (k, 28, 28) in [0, 1], light ink on black
    reason: str | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()

    @property
    def found(self) -> bool:
        return len(self.crops) > 0

    def model_input(self) -> np.ndarray:
        """The crops as the digit model takes them: (k, 28, 28, 1) float32."""
        return self.crops[..., np.newaxis]


def _nothing(reason: str) -> DigitCrops:
    return DigitCrops(crops=np.zeros((0, 28, 28), np.float32), reason=reason)


def read_digits(image: Image.Image | np.ndarray) -> DigitCrops:
    """Find the handwritten digits on a photo and return them as MNIST-like crops, left to right."""
    gray = working_gray(image)
    height, width = gray.shape
    found, reason = ink_map(gray)
    if found is None:
        return _nothing(reason or "no ink on the photo")
    mask = found.strokes()
    if np.count_nonzero(mask) > 0.25 * mask.size:
        return _nothing("too much of the photo is dark marks to be a digit on paper")
    # Lines are found where they are whole (at half the threshold: faint lines break into dashes at the
    # full one), then erased from the strokes: ruled lines first, then squared paper's columns.
    guide = found.strokes(0.5)
    without_rows = remove_ruled_lines(mask, guide)
    if without_rows is not mask:  # ruled paper; squared paper has columns too
        mask = remove_ruled_lines(without_rows.T, guide.T).T
    labels, components = label_components(mask)
    components = drop_border_and_specks(components, height, width)
    if len(components) > 150:
        return _nothing("the photo is too busy (texture or a scene, not a digit on paper)")
    groups = digit_row(group_by_columns(components))
    why = implausible(groups, components, height, width)
    if why:
        return _nothing(why)
    crops = np.stack([crop_group(found.ink, labels, group, found.threshold) for group in groups])
    boxes = tuple((g.left / width, g.top / height, g.right / width, g.bottom / height) for g in groups)
    return DigitCrops(crops=crops, reason=None, boxes=boxes)
