"""Photos that are not flowers, for fitting and measuring the "not a flower" detector.

Two sources, kept apart on purpose:
- `synthetic_recipes(n, seed)` / `synthetic_non_flowers(n, seed)`: scenes, faces, textures, noise,
  documents and handwritten-digit photos drawn with PIL (digits from MNIST rendered as ink on paper).
  Cheap, endless, different per seed: one seed calibrates the detector, another measures it.
- `package_recipes()` / `package_photos()`: real photographs shipped inside installed packages
  (scikit-image's sample data — astronaut, cat, coffee, rocket, horse, moon, coins, text, bricks,
  grass, 200 LFW faces … — and matplotlib's Grace Hopper). Used only to measure, never to fit.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

log = logging.getLogger(__name__)

SIZE = 320
GENERATOR = "non-flowers-v1"  # change when the drawings change: cached features are keyed by it
KINDS = ("scene", "face", "texture", "noise", "document", "digits")


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(low, high, 3))
    return red, green, blue


def _photo_finish(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blur, sensor noise and a JPEG round trip, like a phone photo."""
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.6))))
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels * rng.uniform(0.75, 1.15) + rng.normal(0, rng.uniform(1, 8), pixels.shape)
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(60, 95)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def draw_scene(rng: np.random.Generator) -> Image.Image:
    """A street or landscape: sky, ground, houses with windows, a road, a sun, cars."""
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    horizon = int(rng.integers(SIZE // 3, 2 * SIZE // 3))
    sky, ground = _colour(rng, 120, 256), _colour(rng, 40, 170)
    for y in range(horizon):
        shade = y / max(horizon, 1)
        draw.line([(0, y), (SIZE, y)], fill=tuple(int(c * (1 - 0.3 * shade)) for c in sky))
    draw.rectangle([0, horizon, SIZE, SIZE], fill=ground)
    if rng.random() < 0.5:
        x, y, r = int(rng.integers(20, SIZE - 20)), int(rng.integers(10, max(horizon - 10, 11))), 18
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 230, 120))
    for _ in range(int(rng.integers(1, 6))):
        w, h = int(rng.integers(40, 110)), int(rng.integers(40, 160))
        x = int(rng.integers(-20, SIZE - 20))
        draw.rectangle([x, horizon - h, x + w, horizon + 5], fill=_colour(rng, 60, 230), outline=(40, 40, 40))
        draw.polygon(
            [(x - 5, horizon - h), (x + w // 2, horizon - h - 30), (x + w + 5, horizon - h)],
            fill=_colour(rng, 60, 160),
        )
        for wy in range(horizon - h + 10, horizon - 10, 25):
            for wx in range(x + 8, x + w - 12, 22):
                draw.rectangle([wx, wy, wx + 10, wy + 12], fill=_colour(rng, 150, 256))
    draw.polygon(
        [(SIZE // 2 - 20, horizon), (SIZE // 2 + 20, horizon), (SIZE, SIZE), (0, SIZE)], fill=(70, 70, 75)
    )
    for _ in range(int(rng.integers(0, 3))):
        x, y = int(rng.integers(0, SIZE - 80)), int(rng.integers(horizon + 20, SIZE - 30))
        draw.rounded_rectangle([x, y, x + 80, y + 30], radius=8, fill=_colour(rng))
        draw.ellipse([x + 8, y + 22, x + 24, y + 38], fill=(20, 20, 20))
        draw.ellipse([x + 56, y + 22, x + 72, y + 38], fill=(20, 20, 20))
    return image


def draw_face(rng: np.random.Generator) -> Image.Image:
    """A portrait: head, hair, eyes, nose, mouth, shoulders on a plain or busy background."""
    image = Image.new("RGB", (SIZE, SIZE), _colour(rng, 30, 230))
    draw = ImageDraw.Draw(image)
    skin = tuple(int(v) for v in np.array([224, 172, 140]) * rng.uniform(0.45, 1.1))
    cx, cy = SIZE // 2 + int(rng.integers(-30, 30)), SIZE // 2 + int(rng.integers(-20, 20))
    w, h = int(rng.integers(90, 130)), int(rng.integers(120, 160))
    draw.ellipse([cx - w - 40, cy + h - 30, cx + w + 40, cy + h + 200], fill=_colour(rng))
    draw.ellipse([cx - w - 8, cy - h - 12, cx + w + 8, cy + h // 3], fill=_colour(rng, 0, 120))
    draw.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    for side in (-1, 1):
        ex = cx + side * w // 2
        draw.ellipse([ex - 18, cy - 30, ex + 18, cy - 10], fill=(245, 245, 245))
        draw.ellipse([ex - 8, cy - 28, ex + 8, cy - 12], fill=_colour(rng, 20, 120))
        draw.line([(ex - 20, cy - 45), (ex + 20, cy - 48)], fill=(60, 40, 30), width=5)
    draw.line(
        [(cx, cy - 10), (cx - 8, cy + 30), (cx + 6, cy + 32)], fill=tuple(int(c * 0.8) for c in skin), width=4
    )
    draw.arc([cx - 40, cy + 30, cx + 40, cy + 75], 20, 160, fill=(150, 50, 60), width=6)
    return image


def draw_texture(rng: np.random.Generator) -> Image.Image:
    """Stripes, checks, bricks, wood grain or plaid."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    a, b = _colour(rng), _colour(rng)
    kind = rng.integers(0, 4)
    period = float(rng.uniform(8, 60))
    angle = float(rng.uniform(0, math.pi))
    u = x * math.cos(angle) + y * math.sin(angle)
    if kind == 0:
        mask = (np.sin(u * 2 * math.pi / period) > 0).astype(np.float32)
    elif kind == 1:
        mask = ((x // period + y // period) % 2).astype(np.float32)
    elif kind == 2:
        row = (y // period) % 2
        mask = (((x + row * period) % (2 * period) < 3) | (y % period < 3)).astype(np.float32)
    else:
        rings = np.sqrt((x - rng.uniform(-SIZE, 2 * SIZE)) ** 2 + (y - rng.uniform(-SIZE, 2 * SIZE)) ** 2)
        mask = 0.5 + 0.5 * np.sin(rings * 2 * math.pi / period + 3 * np.sin(u / 40))
    pixels = np.array(a)[None, None, :] * mask[..., None] + np.array(b)[None, None, :] * (1 - mask[..., None])
    return Image.fromarray(pixels.astype(np.uint8))


def draw_noise(rng: np.random.Generator) -> Image.Image:
    """White, coloured or smoothed noise, or a flat colour with a gradient."""
    kind = rng.integers(0, 3)
    pixels: np.ndarray
    if kind == 0:
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3))
    elif kind == 1:
        small = rng.integers(0, 256, (int(rng.integers(4, 40)),) * 2 + (3,)).astype(np.uint8)
        return Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    else:
        ramp = np.linspace(0, 1, SIZE)[None, :, None]
        pixels = np.array(_colour(rng)) * ramp + np.array(_colour(rng)) * (1 - ramp)
        pixels = np.broadcast_to(pixels, (SIZE, SIZE, 3))
    return Image.fromarray(np.asarray(pixels, dtype=np.uint8))


def draw_document(rng: np.random.Generator) -> Image.Image:
    """A page of text (and sometimes a table) on paper, slightly rotated."""
    paper = _colour(rng, 200, 256)
    image = Image.new("RGB", (SIZE, SIZE), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(10, 22)))
    words = [
        "invoice",
        "total",
        "the",
        "report",
        "meeting",
        "2026",
        "photo",
        "bot",
        "data",
        "page",
        "and",
        "of",
    ]
    y = int(rng.integers(5, 30))
    while y < SIZE - 10:
        line = " ".join(rng.choice(words, int(rng.integers(3, 9))))
        draw.text((int(rng.integers(5, 30)), y), line, fill=_colour(rng, 0, 80), font=font)
        y += int(rng.integers(14, 30))
    if rng.random() < 0.3:
        for gx in range(20, SIZE, 60):
            draw.line([(gx, 0), (gx, SIZE)], fill=(90, 90, 90), width=1)
    return image.rotate(
        float(rng.uniform(-8, 8)), fillcolor=_colour(rng, 0, 120), resample=Image.Resampling.BILINEAR
    )


def draw_digits(rng: np.random.Generator, digits: np.ndarray) -> Image.Image:
    """A photo of one to four handwritten digits (MNIST) in ink on paper, lit unevenly."""
    paper = np.array(_colour(rng, 190, 256), dtype=np.float32)
    ink = np.array(_colour(rng, 0, 90), dtype=np.float32)
    count = int(rng.integers(1, 5))
    cell = int(rng.integers(70, 260)) // count + 40
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    x0 = max(0, (SIZE - cell * count) // 2 + int(rng.integers(-20, 20)))
    y0 = max(0, (SIZE - cell) // 2 + int(rng.integers(-30, 30)))
    for i in range(count):
        glyph = Image.fromarray(digits[int(rng.integers(0, len(digits)))]).resize(
            (cell, cell), Image.Resampling.BILINEAR
        )
        x = x0 + i * cell
        region = canvas[y0 : y0 + cell, x : x + cell]
        region[...] = np.maximum(
            region, np.asarray(glyph, np.float32)[: region.shape[0], : region.shape[1]] / 255
        )
    light = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.1), SIZE)[None, :, None]
    pixels = (paper * (1 - canvas[..., None]) + ink * canvas[..., None]) * light
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.rotate(float(rng.uniform(-12, 12)), fillcolor=tuple(int(c) for c in paper * 0.8))


_DRAW: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "scene": draw_scene,
    "face": draw_face,
    "texture": draw_texture,
    "noise": draw_noise,
    "document": draw_document,
}


@functools.lru_cache(maxsize=2)
def _mnist_digits(mnist_file: Path | None, limit: int = 2000) -> np.ndarray:
    """MNIST test digits from the caller's mnist.npz (uint8, white on black)."""
    if mnist_file is None or not Path(mnist_file).is_file():
        raise FileNotFoundError(
            f"mnist.npz not found ({mnist_file or 'no file given'}): it is needed to draw digit photos; "
            "put it in a PHOTOBOT_DATASETS folder (or pass --datasets)"
        )
    with np.load(mnist_file) as data:
        return data["x_test"][:limit]


@dataclass(frozen=True)
class Recipe:
    """How to make one non-flower photo, and a key that names it (stable while GENERATOR does not change).

    Cached features are looked up by `key`, so a warm run never draws or decodes the photo at all.
    """

    kind: str
    key: str
    make: Callable[[], Image.Image]


def synthetic_photo(
    index: int, seed: int, kinds: tuple[str, ...] = KINDS, mnist_file: Path | None = None
) -> tuple[str, Image.Image]:
    """Photo number `index` of the set `seed`: each photo has its own random stream.

    Digit photos draw MNIST test digits from `mnist_file` (the caller finds it: `find_mnist`).
    """
    rng = np.random.default_rng([seed, index])
    kind = kinds[index % len(kinds)]
    image = draw_digits(rng, _mnist_digits(mnist_file)) if kind == "digits" else _DRAW[kind](rng)
    return kind, _photo_finish(image, rng)


def synthetic_recipes(
    count: int, seed: int, kinds: tuple[str, ...] = KINDS, mnist_file: Path | None = None
) -> list[Recipe]:
    return [
        Recipe(
            kind=kinds[i % len(kinds)],
            key=f"{GENERATOR}:{seed}:{i}:{','.join(kinds)}",
            make=functools.partial(lambda i: synthetic_photo(i, seed, kinds, mnist_file)[1], i),
        )
        for i in range(count)
    ]


def synthetic_non_flowers(
    count: int, seed: int, kinds: tuple[str, ...] = KINDS, mnist_file: Path | None = None
) -> Iterator[tuple[str, Image.Image]]:
    """Yield `count` (kind, photo) pairs, cycling through `kinds`; the same seed gives the same photos."""
    for i in range(count):
        yield synthetic_photo(i, seed, kinds, mnist_file)


def package_recipes(crops_per_photo: int = 4, seed: int = 0) -> list[Recipe]:
    """Real photographs shipped in installed packages, with a few random crops each, and LFW faces.

    scikit-image's sample data (if installed) and matplotlib's Grace Hopper. LFW faces are 25×25 grey
    crops, shown upscaled as a low-quality portrait.
    """
    recipes: list[Recipe] = []
    rng = np.random.default_rng(seed)
    for path in _package_photo_files():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        boxes: list[tuple[float, float, float] | None] = [None]
        boxes += [(rng.uniform(0.45, 0.8), rng.random(), rng.random()) for _ in range(crops_per_photo)]
        for k, box in enumerate(boxes):
            name = path.stem if box is None else f"{path.stem}-crop{k}"
            make = functools.partial(_package_crop, path, box)
            recipes.append(Recipe(kind=name, key=f"{GENERATOR}:{digest}:{box}", make=make))
    faces = _lfw_faces()
    for i in range(len(faces)):
        make = functools.partial(_lfw_face, i)
        recipes.append(Recipe(kind=f"lfw-{i}", key=f"{GENERATOR}:lfw:{i}", make=make))
    return recipes


def package_photos(crops_per_photo: int = 4, seed: int = 0) -> Iterator[tuple[str, Image.Image]]:
    """The photos of `package_recipes`, as (name, photo)."""
    for recipe in package_recipes(crops_per_photo, seed):
        yield recipe.kind, recipe.make()


def _package_crop(path: Path, box: tuple[float, float, float] | None) -> Image.Image:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if box is None:
        return image
    scale, fx, fy = box
    w, h = int(image.width * scale), int(image.height * scale)
    x, y = int(fx * (image.width - w)), int(fy * (image.height - h))
    return image.crop((x, y, x + w, y + h))


def _lfw_face(index: int) -> Image.Image:
    face = (_lfw_faces()[index] * 255).astype(np.uint8)
    return Image.fromarray(face).convert("RGB").resize((160, 160), Image.Resampling.BICUBIC)


# Sample images that are photographs or photo-like scenes (not synthetic test patterns or micrographs).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "rocket.jpg",
    "text.png",
    "clock_motion.png",
    "retina.jpg",
    "ihc.png",
    "cell.png",
    "logo.png",
)


def _package_photo_files() -> list[Path]:
    files: list[Path] = []
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        files += [folder / name for name in SKIMAGE_PHOTOS if (folder / name).is_file()]
    except ImportError:
        log.info("scikit-image is not installed: its sample photos are skipped")
    import matplotlib

    sample = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if sample.is_file():
        files.append(sample)
    return files


@functools.lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    try:
        import skimage
    except ImportError:
        return np.zeros((0, 25, 25))
    path = Path(skimage.__file__).parent / "data" / "lfw_subset.npy"
    return np.load(path) if path.is_file() else np.zeros((0, 25, 25))
