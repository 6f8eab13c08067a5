"""Training the digit-ness test of `inference.digitness`: "is this crop a handwritten digit?"

Positives are what the digit reader sees of real handwriting on paper: the crops `read_digits` cuts
from phone-photo renders of MNIST *training* digits (`training.synth_photos`: paper colours, inks,
rulings, light, blur, JPEG), and MNIST training digits with their style varied (strokes thickened and
thinned, slanted, squeezed) framed as served. Negatives are the crops `read_digits` cuts from photos
that show no digit: the flower photos of the training split, and the development halves of the
package photos and of `other_photos/` (`training.halves`; the held halves are never read here),
flipped and turned to count four times.

    python -m training.synth_photos --out R --n 2500 --split train --size 800x600 --seed 21 --datasets D
    python -m training.digitness --renders R --datasets D --out inference/shipped/digitness.npz

prints the validation figures (a fifth of the non-digit photos, by name, and the renders' own
validation tenth) and writes the weights as float16. The renders count twice beside the MNIST digits:
they are how photos look to the reader.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DECODE_SIZE = 256  # as auto mode decodes: the flower model's shorter side


def reader_crops(image_bytes: bytes) -> np.ndarray:
    """The (k, 28, 28) crops `read_digits` cuts from a photo, decoded as auto mode decodes it."""
    from inference.decode import decode_image
    from inference.digits import read_digits

    image = decode_image(image_bytes, max_bytes=50_000_000, max_pixels=80_000_000, target_size=DECODE_SIZE)
    return read_digits(image).crops


def _validation(key: str, share: int = 10) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % share == 0


def _collect(
    photos: Iterable[tuple[str, bytes]], share: int = 10
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Crops of each photo, split into training and validation (one in `share`) by the photo's name."""
    train: list[np.ndarray] = []
    validation: list[np.ndarray] = []
    for key, data in photos:
        crops = reader_crops(data)
        if len(crops):
            (validation if _validation(key, share) else train).append(crops)
    return train, validation


def _files(folder: Path) -> Iterable[tuple[str, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield str(path.relative_to(folder)), path.read_bytes()


def non_digit_photos(datasets: Path) -> Iterable[tuple[str, bytes]]:
    """Flower photos of the training split, the package photos' and `other_photos`' development halves."""
    import io

    from training.flower_data import file_digest, split_of
    from training.halves import half_of, package_source
    from training.non_flowers import package_recipes

    for folder in sorted(p for p in (datasets / "flower_photos").iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg")):
            if split_of(file_digest(path), 10, 10) == "train":
                yield f"flowers/{path.name}", path.read_bytes()
    for recipe in package_recipes():
        if half_of(package_source(recipe.kind)) == "dev":
            buffer = io.BytesIO()
            recipe.make().save(buffer, "PNG")
            yield f"package/{recipe.kind}", buffer.getvalue()
    for path in sorted((datasets / "other_photos").glob("*.jpg")):
        if half_of(path.name) == "dev":
            yield f"other/{path.name}", path.read_bytes()


def styled_mnist(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST digits in other hands: most with strokes thickened or thinned, slanted, squeezed, the rest
    as written; framed as served."""
    from PIL import Image, ImageFilter

    from inference.digits import normalize_digit

    out = []
    for image in images:
        if rng.random() < 0.4:  # as written: thin strokes are digits too
            out.append(normalize_digit(image))
            continue
        big = Image.fromarray(image).resize((56, 56), Image.Resampling.BILINEAR)
        width = int(rng.integers(-1, 3))
        if width > 0:
            big = big.filter(ImageFilter.MaxFilter(2 * width + 1))
        elif width < 0:
            big = big.filter(ImageFilter.MinFilter(3))
        shear, squeeze = float(rng.uniform(-0.35, 0.35)), float(rng.uniform(0.7, 1.3))
        # output (x, y) samples input (x + shear·(y − 28), 28 + squeeze·(y − 28))
        coefficients = (1.0, shear, -28.0 * shear, 0.0, squeeze, 28.0 * (1.0 - squeeze))
        big = big.transform((56, 56), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
        out.append(normalize_digit(np.asarray(big)))
    return np.stack(out).astype(np.float32)


def _turned(crops: np.ndarray) -> np.ndarray:
    """A negative crop flipped and turned: still no digit, four times the examples."""
    turns = [crops, crops[:, ::-1], np.rot90(crops, 1, axes=(1, 2)), np.rot90(crops, 3, axes=(1, 2))]
    return np.concatenate(turns)


def build_model() -> Any:
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 5, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dense(1, activation="sigmoid", name="dense2"),
        ]
    )


def export(model: Any, path: Path) -> None:
    arrays = {}
    for name in ("conv1", "conv2", "dense1", "dense2"):
        kernel, bias = model.get_layer(name).get_weights()
        arrays[f"{name}_kernel"] = kernel.astype(np.float16)
        arrays[f"{name}_bias"] = bias.astype(np.float16)
    np.savez_compressed(path, **arrays)


def train(
    renders: list[Path],
    datasets: Path,
    out: Path,
    *,
    mnist_count: int = 24_000,
    epochs: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    import keras

    from inference.digitness import digitness
    from training.datasets import load_mnist

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    pos_train, pos_val = [], []
    for folder in renders:
        t, v = _collect(_files(folder))
        pos_train += t
        pos_val += v
    neg_train, neg_val = _collect(non_digit_photos(datasets), share=5)
    x_train, _, _, _ = load_mnist([datasets], datasets)
    chosen = rng.choice(len(x_train), mnist_count, replace=False)
    styled = styled_mnist(x_train[chosen], rng)
    positives = np.concatenate([*pos_train, *pos_train, styled])
    negatives = _turned(np.concatenate(neg_train))
    log.info("training on %d digit crops, %d non-digit crops", len(positives), len(negatives))
    x = np.concatenate([positives, negatives])[..., None].astype(np.float32)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))]).astype(np.float32)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    model.fit(x, y, batch_size=128, epochs=epochs, shuffle=True, verbose=2)
    export(model, out)
    weights = {k: v.astype(np.float32) for k, v in np.load(out).items()}
    figures: dict[str, float] = {}
    for name, sets in (("digits", pos_val), ("non-digits", neg_val)):
        scores = [float(digitness(crops, weights).min()) for crops in sets]
        figures[f"{name} photos"] = len(scores)
        for cut in (0.05, 0.2, 0.5):
            figures[f"{name} below {cut}"] = float(np.mean(np.asarray(scores) < cut)) if scores else 0.0
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the digit-ness test of inference.digitness.")
    parser.add_argument(
        "--renders", type=Path, action="append", required=True, help="training.synth_photos output"
    )
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, value in train(args.renders, args.datasets, args.out, epochs=args.epochs).items():
        print(f"{name}: {value:.4g}")


if __name__ == "__main__":
    main()
