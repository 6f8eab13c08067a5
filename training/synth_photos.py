"""Phone photos of handwritten digits, rendered from MNIST: the stand-in for users' photos.

A photo is an MNIST digit (or a row of them: a number) drawn as ink on paper — white, cream, coloured,
ruled or squared — under uneven light (gradients, vignetting, a soft shadow), anywhere in the frame and
at any size from a few percent to most of it, tilted, blurred, noisy and JPEG-compressed, sometimes
stored sideways with an EXIF orientation tag as phones do. One photo in a few is light chalk on a dark
board instead (MNIST's own polarity). Photos with no digit at all (a blank page, a cluttered scene, a
texture) stand in for the cats and landscapes people also send.

Used as a library (`render_photo`, `render_non_digit`, `random_style`) by tests, the engine's benchmark
and the retraining figures, and as a command that writes a labelled folder set (one sub-folder per label):

    python -m training.synth_photos --out var/photos-test --n 2000 --split test

Evaluation sets are built from the MNIST *test* digits only, training photos from the training digits.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

NO_DIGIT = "none"  # the folder / label of photos with no digit
EXIF_ORIENTATION_TAG = 0x0112
# The transpose that stores an upright picture so that a viewer applying the EXIF orientation shows it
# upright again (Pillow's exif_transpose undoes exactly these).
_STORE_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}

PAPERS = {
    "white": (246, 246, 242),
    "cream": (243, 234, 205),
    "grey": (214, 214, 210),
    "yellow": (250, 240, 160),
    "blue": (212, 228, 245),
    "pink": (247, 218, 224),
}
INKS = {
    "black pen": (25, 25, 35),
    "blue pen": (30, 45, 150),
    "pencil": (85, 85, 90),
    "marker": (10, 10, 10),
    "red pen": (170, 30, 35),
}
BOARDS = {"blackboard": (38, 42, 40), "greenboard": (35, 70, 50), "dark paper": (60, 58, 70)}
CHALKS = {"white chalk": (235, 235, 230), "yellow chalk": (240, 225, 140)}


@dataclass(frozen=True)
class PhotoStyle:
    """Everything about how one photo looks. `random_style` draws one; tests pin single conditions."""

    size: tuple[int, int] = (1280, 960)  # (width, height) of the upright photo
    paper: tuple[int, int, int] = PAPERS["white"]
    ink: tuple[int, int, int] = INKS["black pen"]
    ink_opacity: float = 0.95  # pencil is fainter than a pen
    ruled: float = 0.0  # ruled-line spacing as a fraction of the height; 0: plain paper
    squared: bool = False  # squared paper: vertical lines too
    line_colour: tuple[int, int, int] = (150, 175, 220)
    line_width: float = 0.003  # as a fraction of the height
    line_offset: float = 0.3  # where the first line falls, as a fraction of the spacing
    tilt: float = 0.0  # degrees the whole page (lines and digits) is turned
    digit_height: float = 0.3  # height of the digits as a fraction of the shorter side
    centre: tuple[float, float] = (0.5, 0.5)  # where the digits are, as fractions of width and height
    rotation: float = 0.0  # extra degrees the digits are turned (handwriting slant)
    thickness: float = 0.5  # 0: a fine pen … 1: a thick marker
    spacing: float = 0.25  # gap between the digits of a number, as a fraction of the digit height
    gradient: float = 0.0  # how much darker one side of the page is (0 … 0.6)
    gradient_angle: float = 0.0  # direction of the gradient, degrees
    vignette: float = 0.0  # darkening towards the corners (0 … 0.5)
    shadow: float = 0.0  # a soft shadow over part of the page (0 … 0.5)
    blur: float = 0.0  # Gaussian blur radius as a fraction of the shorter side (out of focus, shake)
    noise: float = 0.0  # sensor noise, standard deviation on the 0–255 scale
    jpeg_quality: int = 90
    exif_orientation: int = 1  # 1: stored upright; 3, 6, 8: stored turned, with the EXIF tag to undo it

    @property
    def light_on_dark(self) -> bool:
        return sum(self.ink) > sum(self.paper)


def random_style(rng: np.random.Generator, size: tuple[int, int] = (1280, 960), **pinned) -> PhotoStyle:
    """Draw the conditions of one photo; keyword arguments pin any field."""
    width, height = size
    if rng.random() < 0.5:
        width, height = height, width  # portrait as often as landscape
    dark = rng.random() < 0.15
    if dark:
        paper = _jitter(rng, _pick(rng, BOARDS), 12)
        ink, opacity = _jitter(rng, _pick(rng, CHALKS), 10), float(rng.uniform(0.75, 0.95))
        ruled, squared = 0.0, False
    else:
        paper = _jitter(rng, _pick(rng, PAPERS), 8)
        ink_name = str(rng.choice(list(INKS)))
        ink = _jitter(rng, INKS[ink_name], 15)
        opacity = float(rng.uniform(0.55, 0.8) if ink_name == "pencil" else rng.uniform(0.85, 1.0))
        lined = rng.random()
        ruled = float(rng.uniform(0.05, 0.1)) if lined < 0.4 else 0.0
        squared = bool(ruled and rng.random() < 0.35)
    digit_height = float(np.exp(rng.uniform(np.log(0.12), np.log(0.75))))
    style = PhotoStyle(
        size=(width, height),
        paper=paper,
        ink=ink,
        ink_opacity=opacity,
        ruled=ruled,
        squared=squared,
        line_colour=_jitter(rng, (150, 175, 220) if rng.random() < 0.7 else (160, 160, 160), 15),
        line_width=float(rng.uniform(0.0015, 0.004)),
        line_offset=float(rng.random()),
        tilt=float(rng.normal(0, 2.0)),
        digit_height=digit_height,
        centre=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
        rotation=float(rng.normal(0, 6.0)),
        thickness=float(rng.uniform(0.1, 0.9)),
        spacing=float(rng.uniform(0.1, 0.45)),
        gradient=float(rng.uniform(0, 0.5)),
        gradient_angle=float(rng.uniform(0, 360)),
        vignette=float(rng.uniform(0, 0.35)),
        shadow=float(rng.uniform(0, 0.35)) if rng.random() < 0.3 else 0.0,
        blur=float(rng.uniform(0, 0.0025)),
        noise=float(rng.uniform(0, 10)),
        jpeg_quality=int(rng.integers(55, 96)),
        exif_orientation=int(rng.choice([1, 1, 1, 1, 3, 6, 8])),
    )
    return replace(style, **pinned)


def render_photo(
    digit_images: Sequence[np.ndarray],
    rng: np.random.Generator,
    style: PhotoStyle | None = None,
    *,
    labels: Sequence[int] | None = None,
) -> tuple[bytes, str]:
    """Render MNIST digits (uint8 28×28, light on black) as one phone photo: `(jpeg_bytes, label)`.

    The label is the digits read left to right (`"7"`, `"2026"`), or `"none"` for no digits.
    """
    style = style or random_style(rng)
    picture = render_array(digit_images, rng, style)
    label = "".join(str(int(d)) for d in labels) if labels is not None and len(labels) else NO_DIGIT
    return encode_jpeg(picture, style), label


def render_non_digit(
    rng: np.random.Generator, style: PhotoStyle | None = None, kind: str | None = None
) -> bytes:
    """A photo with no digit: a blank (maybe ruled) page, a cluttered scene, or a texture."""
    style = style or random_style(rng)
    kind = kind or str(rng.choice(["blank", "scene", "texture"]))
    if kind == "blank":
        picture = render_array([], rng, style)
    elif kind == "scene":
        picture = _scene(rng, style.size)
    elif kind == "texture":
        picture = _texture(rng, style.size)
    else:
        raise ValueError(f"unknown kind of non-digit photo {kind!r}")
    return encode_jpeg(picture, style)


def render_array(
    digit_images: Sequence[np.ndarray], rng: np.random.Generator, style: PhotoStyle
) -> np.ndarray:
    """The upright photo as (height, width, 3) uint8, before JPEG and EXIF."""
    width, height = style.size
    page = _page(style)
    if len(digit_images):
        alpha = _ink_alpha(digit_images, rng, style)
        ink = np.asarray(style.ink, np.float32) * np.float32(1.0)
        a = alpha[..., np.newaxis] * np.float32(style.ink_opacity)
        page = page * (1.0 - a) + ink * a
    page *= _lighting(style)[..., np.newaxis]
    picture = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    radius = style.blur * min(width, height)
    if radius >= 0.3:
        picture = picture.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(picture)
    if style.noise > 0:
        noise = rng.standard_normal(pixels.shape[:2], dtype=np.float32) * np.float32(style.noise)
        pixels = np.clip(pixels + noise[..., np.newaxis], 0, 255).astype(np.uint8)
    return pixels


def encode_jpeg(pixels: np.ndarray, style: PhotoStyle) -> bytes:
    """JPEG bytes; with an EXIF orientation other than 1 the pixels are stored turned, as phones do."""
    picture = Image.fromarray(pixels)
    buffer = io.BytesIO()
    extra = {}
    if style.exif_orientation in _STORE_FOR_ORIENTATION:
        picture = picture.transpose(_STORE_FOR_ORIENTATION[style.exif_orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = style.exif_orientation
        extra["exif"] = exif.tobytes()
    picture.save(buffer, "JPEG", quality=style.jpeg_quality, **extra)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ the page


def _page(style: PhotoStyle) -> np.ndarray:
    """Paper colour with ruled or squared lines, float32 (height, width, 3)."""
    width, height = style.size
    page = np.empty((height, width, 3), np.float32)
    page[:] = np.asarray(style.paper, np.float32)
    if style.ruled <= 0:
        return page
    lines = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(lines)
    line_width = max(1, round(style.line_width * height))
    step = style.ruled * height
    slope = math.tan(math.radians(style.tilt))
    offset = style.line_offset * step
    y = -slope * width - step + offset
    while y < height + abs(slope) * width + step:
        draw.line([(0, y), (width, y + slope * width)], fill=255, width=line_width)
        y += step
    if style.squared:
        x = offset - abs(slope) * height
        while x < width + abs(slope) * height + step:
            draw.line([(x, 0), (x - slope * height, height)], fill=255, width=line_width)
            x += step
    a = (np.asarray(lines, np.float32) * np.float32(0.8 / 255.0))[..., np.newaxis]
    return page * (1.0 - a) + np.asarray(style.line_colour, np.float32) * a


def _lighting(style: PhotoStyle) -> np.ndarray:
    """A smooth multiplicative light field: gradient, vignette and a soft shadow (low-res, upsampled)."""
    width, height = style.size
    small_w, small_h = max(2, width // 16), max(2, height // 16)
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    u, v = xs / (small_w - 1) - 0.5, ys / (small_h - 1) - 0.5
    angle = math.radians(style.gradient_angle)
    along = u * math.cos(angle) + v * math.sin(angle)
    light = 1.0 - style.gradient * (along + 0.5)
    light -= style.vignette * (u**2 + v**2) * 2.0
    if style.shadow > 0:
        edge = u * math.sin(angle) - v * math.cos(angle) - 0.15
        light -= style.shadow / (1.0 + np.exp(-edge * 10.0))  # a diffuse shadow's soft edge
    field = Image.fromarray(np.clip(light, 0.15, 1.2).astype(np.float32), mode="F")
    return np.asarray(field.resize((width, height), Image.Resampling.BILINEAR), np.float32)


# ---------------------------------------------------------------------------------------- the ink


def _ink_alpha(digit_images: Sequence[np.ndarray], rng: np.random.Generator, style: PhotoStyle) -> np.ndarray:
    """Ink coverage (height, width) in [0, 1]: the digits in a row, scaled, turned and placed."""
    width, height = style.size
    digit_px = max(8, round(style.digit_height * min(width, height)))
    patches = [
        _digit_patch(image, round(digit_px * rng.uniform(0.9, 1.1)), style.thickness)
        for image in digit_images
    ]
    gap = round(style.spacing * digit_px)
    row_w = sum(p.width for p in patches) + gap * (len(patches) - 1)
    row_h = max(p.height for p in patches) + round(0.1 * digit_px)
    row = Image.new("L", (row_w, row_h), 0)
    x = 0
    for patch in patches:
        jitter = int(rng.integers(0, row_h - patch.height + 1))
        row.paste(patch, (x, jitter))
        x += patch.width + gap
    row = row.rotate(style.rotation + style.tilt, resample=Image.Resampling.BILINEAR, expand=True)
    if row.width > 0.94 * width or row.height > 0.94 * height:  # a long number on a narrow photo
        scale = min(0.94 * width / row.width, 0.94 * height / row.height)
        row = row.resize(
            (max(1, round(row.width * scale)), max(1, round(row.height * scale))), Image.Resampling.BILINEAR
        )
    margin_x, margin_y = 0.02 * width, 0.02 * height
    left = style.centre[0] * width - row.width / 2
    top = style.centre[1] * height - row.height / 2
    left = round(min(max(left, margin_x), width - margin_x - row.width))
    top = round(min(max(top, margin_y), height - margin_y - row.height))
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(row, (left, top))
    return np.asarray(canvas, np.float32) * np.float32(1.0 / 255.0)


def _digit_patch(image: np.ndarray, digit_px: int, thickness: float) -> Image.Image:
    """One MNIST digit cropped to its strokes, scaled to `digit_px` tall, as crisp pen-like ink."""
    image = np.asarray(image, np.uint8)
    rows = np.flatnonzero(image.max(axis=1) > 30)
    cols = np.flatnonzero(image.max(axis=0) > 30)
    if rows.size == 0:
        return Image.new("L", (1, digit_px), 0)
    crop = image[max(0, rows[0] - 1) : rows[-1] + 2, max(0, cols[0] - 1) : cols[-1] + 2]
    scale = digit_px / crop.shape[0]
    size = (max(2, round(crop.shape[1] * scale)), digit_px)
    smooth = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC), np.float32) / 255.0
    cut = 0.7 - 0.55 * thickness  # a lower cut keeps more of MNIST's soft edge: a thicker stroke
    soft = 0.08 + 0.02 * digit_px / 100
    alpha = np.clip((smooth - cut) / (2 * soft) + 0.5, 0.0, 1.0)
    return Image.fromarray((alpha * 255).astype(np.uint8))


# ------------------------------------------------------------------------------------- no digits


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Clutter: a smooth coloured background with many overlapping shapes, like a room or a street."""
    width, height = size
    low = rng.uniform(30, 230, (4, 5, 3)).astype(np.uint8)
    picture = Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(15, 60))):
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.03, 0.4) * width, rng.uniform(0.03, 0.4) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            points = [
                (x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(int(rng.integers(3, 7)))
            ]
            draw.polygon(points, fill=colour)
    return np.asarray(picture.filter(ImageFilter.GaussianBlur(1.5)))


def _texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Fur, grass or gravel: noise at several scales, tinted."""
    width, height = size
    total = np.zeros((height, width), np.float32)
    for scale, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        small = rng.random((max(2, height // scale), max(2, width // scale))).astype(np.float32)
        total += weight * np.asarray(
            Image.fromarray(small, mode="F").resize((width, height), Image.Resampling.BICUBIC)
        )
    tint = rng.uniform(60, 255, 3).astype(np.float32)
    return np.clip(total[..., np.newaxis] * tint * 1.2, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- folder sets


def write_set(
    out: Path,
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    numbers: float = 0.0,
    no_digit: float = 0.0,
    size: tuple[int, int] = (1280, 960),
) -> dict[str, int]:
    """Write `n` photos under `out/<label>/NNNNN.jpg` and return how many each label got.

    A fraction `numbers` of them are numbers of 2–4 digits (folder named by the number), a fraction
    `no_digit` have no digit (folder `none`); the rest are single digits, each MNIST digit used once
    while they last.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    next_digit = 0
    counts: dict[str, int] = {}
    for index in range(n):
        style = random_style(rng, size=size)
        draw = rng.random()
        if draw < no_digit:
            data, label = render_non_digit(rng, style), NO_DIGIT
        else:
            k = int(rng.integers(2, 5)) if draw < no_digit + numbers else 1
            chosen = [order[(next_digit + i) % len(order)] for i in range(k)]
            next_digit += k
            data, label = render_photo(
                [images[i] for i in chosen], rng, style, labels=[labels[i] for i in chosen]
            )
        folder = Path(out) / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:05d}.jpg").write_bytes(data)
        counts[label] = counts.get(label, 0) + 1
    return counts


def _pick(rng: np.random.Generator, table: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    return table[str(rng.choice(list(table)))]


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    red, green, blue = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return red, green, blue


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a folder set of synthetic phone photos of MNIST digits."
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (one sub-folder per label)")
    parser.add_argument("--n", type=int, default=2000, help="number of photos")
    parser.add_argument(
        "--split", choices=("test", "train"), default="test", help="which MNIST digits to draw"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--numbers", type=float, default=0.0, help="fraction of photos showing a 2–4 digit number"
    )
    parser.add_argument(
        "--none", type=float, default=0.0, help="fraction of photos with no digit (folder none/)"
    )
    parser.add_argument("--size", default="1280x960", help="photo size WIDTHxHEIGHT (default 1280x960)")
    from training.datasets import dataset_options, load_mnist

    dataset_options(parser)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    x_train, y_train, x_test, y_test = load_mnist(args.datasets, args.data_dir)
    images, labels = (x_test, y_test) if args.split == "test" else (x_train, y_train)
    width, height = (int(v) for v in args.size.lower().split("x"))
    counts = write_set(
        args.out,
        images,
        labels,
        args.n,
        seed=args.seed,
        numbers=args.numbers,
        no_digit=args.none,
        size=(width, height),
    )
    print(
        f"wrote {sum(counts.values())} photos to {args.out}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
