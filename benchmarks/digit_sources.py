"""Digit readers measured source by source, in one run (issue 18): how a model does on MNIST as served, on
our own phone-photo renders of MNIST test digits, and on handwriting by other writers than MNIST's.

Sources, kept apart (none of them is ever trained on):

- `mnist-test`: the 10,000 MNIST test digits framed by `normalize_digit`, as `photobot evaluate
  --mnist-test` serves them; `mnist-test-raw`: the same digits as MNIST made them (the course MLP's
  training figure is measured on these);
- `mnist-photos`: MNIST test digits rendered as 640×480 phone photos by `training.synth_photos` and read
  back through the serving path (`training.evaluation.read_photo`: decode, `read_digits`, model, answer);
- `uci-photos`: the UCI optical digits that scikit-learn ships (`load_digits`: 1,797 digits by 13 writers
  of NIST's forms, none of them MNIST's), each enlarged from its 8×8 block counts to a smooth stroke image
  and rendered as a phone photo by the same camera pipeline; `uci-framed`: the same stroke images framed
  directly, without a camera (what the handwriting alone costs).

    python -m benchmarks.digit_sources --model inference/shipped/digits/model.keras --model NEW.keras
    python -m benchmarks.digit_sources --model M --write var/uci-photos   # also as a folder set

scikit-learn is a dev dependency (the `dev` extra): nothing at serving time needs it. The folder written
by `--write DIR` (`DIR/<digit>/NNNNN.jpg`) goes through the real engine with `photobot evaluate --images`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

PHOTO_SIZE = (640, 480)
MNIST_PHOTOS = 2000  # MNIST test digits rendered as photos (the figure in the shipped model's meta.json)
MNIST_PHOTO_SEED = 0
UCI_PHOTO_SEED = 18  # the number: a seed no training run uses for rendering


@dataclass(frozen=True)
class Score:
    """How one model did on one source."""

    n: int
    right: int
    unsure: int = 0
    not_recognized: int = 0
    ece: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.right / self.n if self.n else 0.0

    def as_json(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 5),
            "unsure": self.unsure,
            "not_recognized": self.not_recognized,
            "ece": round(self.ece, 5),
        }


# ------------------------------------------------------------------------------ other writers' digits


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's copy of the UCI optical digits: (1797, 8, 8) block counts 0–16 and their labels."""
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    except ImportError as error:  # a dev dependency, not a serving one
        raise SystemExit("scikit-learn is needed for the UCI digits: pip install -e '.[dev]'") from error
    digits = load_digits()
    return np.asarray(digits.images, np.float32), np.asarray(digits.target, np.int64)


def stroke_image(cells: np.ndarray, side: int = 28) -> np.ndarray:
    """An 8×8 digit of block counts (0–16: on pixels of a 4×4 block of NIST's 32×32 bitmap) → a smooth
    light-on-black uint8 image of `side`×`side`, like an MNIST digit.

    A bicubic enlargement of the coverage with a cell of margin, steepened around half coverage (the
    best guess of where the pen's edge was; a block average blurs a stroke over four pixels and fills
    the holes of 8s and narrow 0s at lower cuts): the camera pipeline (`synth_photos._digit_patch`)
    then cuts it into crisp ink of the style's thickness, which moves the edge between coverages of
    about 0.36 and 0.56.
    """
    coverage = np.pad(np.asarray(cells, np.float32) / 16.0, 1)
    big = np.asarray(
        Image.fromarray(coverage, mode="F").resize((side, side), Image.Resampling.BICUBIC), np.float32
    )
    steep = 1.0 / (1.0 + np.exp(-(big - 0.5) / 0.1))
    steep[big < 0.05] = 0.0  # no faint halo around the digit
    return (steep * 255).astype(np.uint8)


def render_photos(
    images: np.ndarray, labels: np.ndarray, seed: int, size: tuple[int, int] = PHOTO_SIZE
) -> list[tuple[bytes, str]]:
    """Each digit once, as a phone photo of one digit: (jpeg bytes, label)."""
    from training.synth_photos import random_style, render_photo

    rng = np.random.default_rng(seed)
    return [
        render_photo([image], rng, random_style(rng, size=size), labels=[int(label)])
        for image, label in zip(images, labels, strict=True)
    ]


def mnist_photos(x_test: np.ndarray, y_test: np.ndarray, n: int, seed: int) -> list[tuple[bytes, str]]:
    """`python -m training.synth_photos --split test --n N --seed SEED --size 640x480`'s photos, in memory."""
    from training.synth_photos import random_style, render_photo

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_test))
    photos = []
    for index in range(n):
        style = random_style(rng, size=PHOTO_SIZE)
        rng.random()  # write_set draws whether the photo is a number or blank here
        chosen = order[index % len(order)]
        photos.append(render_photo([x_test[chosen]], rng, style, labels=[int(y_test[chosen])]))
    return photos


# ------------------------------------------------------------------------------------------ measures


def score_photos(model, photos: Sequence[tuple[bytes, str]]) -> Score:
    """Served answers: a refusal counts as wrong, an `unsure` answer with the right label as right."""
    from training.calibration import expected_calibration_error
    from training.evaluation import read_photo

    right = unsure = refused = 0
    confidences, hits = [], []
    for data, truth in photos:
        prediction = read_photo(data, model)
        hit = prediction.label == truth
        right += hit
        unsure += prediction.status == "unsure"
        refused += prediction.status == "not_recognized"
        confidences.append(prediction.confidence)
        hits.append(hit)
    ece = expected_calibration_error(confidences, hits)
    return Score(len(photos), right, unsure, refused, ece)


def score_crops(model, x: np.ndarray, y: np.ndarray) -> Score:
    """Crops straight into the model (no photo): top-1 accuracy and the calibration of its confidence."""
    from training.calibration import expected_calibration_error
    from training.fit import predict_batches

    probabilities = predict_batches(model, x[..., np.newaxis] if x.ndim == 3 else x, 1000)
    predicted = probabilities.argmax(axis=1)
    hits = predicted == y
    return Score(len(y), int(hits.sum()), ece=expected_calibration_error(probabilities.max(axis=1), hits))


def build_sources(x_test: np.ndarray, y_test: np.ndarray, *, mnist_photo_count: int) -> dict:
    """Every source's inputs, made once for all the models of a run."""
    from inference.digits import normalize_digit
    from training.train_digits import mnist_inputs

    cells, uci_labels = uci_digits()
    strokes = np.stack([stroke_image(c) for c in cells])
    return {
        "mnist-test": ("crops", mnist_inputs(x_test, framed=True), y_test),
        "mnist-test-raw": ("crops", mnist_inputs(x_test, framed=False), y_test),
        "mnist-photos": (
            "photos",
            mnist_photos(x_test, y_test, mnist_photo_count, MNIST_PHOTO_SEED),
            None,
        ),
        "uci-framed": ("crops", np.stack([normalize_digit(s) for s in strokes]), uci_labels),
        "uci-photos": ("photos", render_photos(strokes, uci_labels, UCI_PHOTO_SEED), None),
    }


def measure(model, sources: dict) -> dict[str, Score]:
    scores = {}
    for name, (kind, inputs, labels) in sources.items():
        started = time.monotonic()
        scores[name] = score_photos(model, inputs) if kind == "photos" else score_crops(model, inputs, labels)
        logger.info("%s: %.2f%% (%.0f s)", name, 100 * scores[name].accuracy, time.monotonic() - started)
    return scores


def write_folder(photos: Sequence[tuple[bytes, str]], out: Path) -> None:
    """The photos as a labelled folder set, for `photobot evaluate --images`."""
    for index, (data, label) in enumerate(photos):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:05d}.jpg").write_bytes(data)


def table(results: dict[str, dict[str, Score]]) -> str:
    names = list(next(iter(results.values())))
    lines = ["| source | n | " + " | ".join(results) + " |", "|---|---|" + "---|" * len(results)]
    for name in names:
        first = next(iter(results.values()))[name]
        cells = []
        for scores in results.values():
            score = scores[name]
            extra = (
                f" ({score.unsure} unsure, {score.not_recognized} refused)"
                if score.unsure or score.not_recognized
                else ""
            )
            cells.append(f"{score.accuracy:.2%}{extra}, ECE {score.ece:.1%}")
        lines.append(f"| {name} | {first.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a .keras digit model (repeatable)")
    parser.add_argument("--mnist-photos", type=int, default=MNIST_PHOTOS, help="MNIST test digits as photos")
    parser.add_argument("--write", type=Path, help="also write the UCI photos as a folder set here")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    from training.datasets import dataset_options, load_mnist

    dataset_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import keras

    _, _, x_test, y_test = load_mnist(args.datasets, args.data_dir)
    sources = build_sources(x_test, y_test, mnist_photo_count=args.mnist_photos)
    if args.write:
        write_folder(sources["uci-photos"][1], args.write)
    results = {}
    for path in args.model:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        results[path] = measure(model, sources)
    print(table(results))
    if args.json:
        print(json.dumps({m: {s: v.as_json() for s, v in r.items()} for m, r in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
