"""Measuring digit models: MNIST test accuracy, accuracy on a folder of photos, and time per photo.

Photos go through exactly the serving path — `decode_image` (JPEG draft decoding, EXIF), `read_digits`,
the model, `digits_prediction` — so the figures are the bot's. For contrast, `naive=True` runs the
pipeline people write first: grayscale, invert, resize the whole photo to 28×28, classify.

    python -m training.evaluation --model M --mnist-test
    python -m training.evaluation --model M --photos var/photos-test
    python -m training.evaluation --model M --photos var/photos-test --naive
    python -m training.evaluation --model M --photos var/photos-test --time 200
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from inference.decode import decode_image
from inference.digits import DECODE_SIZE, LABELS, digits_prediction, read_digits
from inference.prediction import Prediction

logger = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@dataclass
class PhotoEvaluation:
    n: int = 0
    correct: int = 0
    unsure: int = 0
    not_recognized: int = 0
    per_class: dict[str, list[int]] = field(default_factory=dict)  # label → [correct, total]
    mistakes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (file, truth, answer)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def as_json(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "unsure": self.unsure,
            "not_recognized": self.not_recognized,
            "per_class": {k: c / t for k, (c, t) in sorted(self.per_class.items())},
        }


def labelled_photos(folder: Path) -> list[tuple[Path, str]]:
    """(path, label) for every image under `folder/<label>/`, in a stable order."""
    found = []
    for label_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path, label_dir.name))
    return found


def read_photo(
    data: bytes, model, *, version: int | None = None, stages: dict[str, list[float]] | None = None
) -> Prediction:
    """One photo through the serving path: decode, find the digits, classify them, answer.

    `model` is a Keras model (`predict_on_batch`: ~1.8 ms for the CNN here, less than a compiled
    `tf.function` call) or any callable from crops to probabilities. With `stages`, the CPU
    milliseconds of each stage are appended to its list (`decode`, `read_digits`, `model_and_answer`).
    """
    marks = [time.process_time()]
    image = decode_image(
        data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, target_size=DECODE_SIZE, grayscale=True
    )
    marks.append(time.process_time())
    found = read_digits(image)
    marks.append(time.process_time())
    if not found.found:
        prediction = digits_prediction(np.zeros((0, 10)), LABELS, version, reason=found.reason)
    else:
        run = model.predict_on_batch if hasattr(model, "predict_on_batch") else model
        prediction = digits_prediction(np.asarray(run(found.model_input())), LABELS, version)
    marks.append(time.process_time())
    if stages is not None:
        for name, start, end in zip(STAGES, marks[:-1], marks[1:], strict=True):
            stages[name].append((end - start) * 1000)
    return prediction


STAGES = ("decode", "read_digits", "model_and_answer")  # of `read_photo`, for `time_per_photo`


def naive_input(data: bytes) -> np.ndarray:
    """The first thing people try: grayscale, invert, squash the whole photo to 28×28."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L")
    pixels = 255 - np.asarray(image.resize((28, 28), Image.Resampling.BILINEAR), np.float32)
    return (pixels / 255.0)[np.newaxis, ..., np.newaxis]


def evaluate_photos(model, folder: Path, *, naive: bool = False, keep_mistakes: int = 50) -> PhotoEvaluation:
    """Accuracy on a labelled folder: an answer counts when its label equals the folder's name.

    `none/` holds photos with no digit: those count as correct when the answer is `not_recognized`.
    """
    result = PhotoEvaluation()
    for path, truth in labelled_photos(folder):
        data = path.read_bytes()
        if naive:
            probs = np.asarray(model.predict_on_batch(naive_input(data)))
            answer: str | None = LABELS[int(probs.argmax())]
            status = "ok"
        else:
            prediction = read_photo(data, model)
            answer, status = prediction.label, prediction.status
        result.n += 1
        result.unsure += status == "unsure"
        result.not_recognized += status == "not_recognized"
        right = (status == "not_recognized") if truth == "none" else (answer == truth)
        result.correct += right
        tally = result.per_class.setdefault(truth, [0, 0])
        tally[0] += right
        tally[1] += 1
        if not right and len(result.mistakes) < keep_mistakes:
            result.mistakes.append((str(path), truth, answer))
    return result


def mnist_test_accuracy(model, x_test: np.ndarray, y_test: np.ndarray, *, framed: bool = True) -> float:
    """Accuracy on the MNIST test digits, framed by `normalize_digit` like served crops (or raw)."""
    from training.train_digits import mnist_accuracy, mnist_inputs

    return mnist_accuracy(model, mnist_inputs(x_test, framed=framed), y_test)


def time_per_photo(model, paths: Sequence[Path], repeats: int = 1) -> dict[str, float | dict[str, float]]:
    """Milliseconds of decode + preprocess + model + answer, one photo at a time: wall clock and CPU,
    and the CPU time of each stage (median over the photos).

    The CPU time (all of this process's threads; TensorFlow pinned to one thread by `main`) is the
    figure that holds on a busy shared machine, where the wall clock also counts other people's work.
    """
    blobs = [p.read_bytes() for p in paths]
    for data in blobs[:5]:
        read_photo(data, model)  # warm up the model and the caches
    wall, cpu = [], []
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for _ in range(repeats):
        for data in blobs:
            started, started_cpu = time.perf_counter(), time.process_time()
            read_photo(data, model, stages=stages)
            cpu.append((time.process_time() - started_cpu) * 1000)
            wall.append((time.perf_counter() - started) * 1000)
    wall.sort()
    cpu.sort()
    return {
        "photos": len(wall),
        "median_ms": statistics.median(wall),
        "p90_ms": wall[int(0.9 * (len(wall) - 1))],
        "median_cpu_ms": statistics.median(cpu),
        "p90_cpu_ms": cpu[int(0.9 * (len(cpu) - 1))],
        "median_cpu_ms_by_stage": {stage: statistics.median(values) for stage, values in stages.items()},
        "load_average": os.getloadavg()[0],
    }


def _one_core() -> None:
    """Pin TensorFlow (if it is the backend) to one thread, so the timing is per core."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except (ImportError, RuntimeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure a digit model on MNIST and on photos.")
    parser.add_argument("--model", type=Path, required=True, help="a .keras digit model")
    parser.add_argument("--photos", type=Path, help="labelled folder (one sub-folder per label)")
    parser.add_argument("--naive", action="store_true", help="use the naive pipeline instead of read_digits")
    parser.add_argument("--mnist-test", action="store_true", help="accuracy on the MNIST test set")
    parser.add_argument("--time", type=int, default=0, help="time N photos of --photos, one at a time")
    from training.datasets import dataset_options

    dataset_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.time:
        _one_core()
    import keras

    model = keras.saving.load_model(args.model, compile=False, safe_mode=True)
    report: dict[str, object] = {"model": str(args.model)}
    if args.mnist_test:
        from training.datasets import load_mnist

        _, _, x_test, y_test = load_mnist(args.datasets, args.data_dir)
        report["mnist_test_accuracy"] = mnist_test_accuracy(model, x_test, y_test)
    if args.photos and args.time:
        paths = [p for p, _ in labelled_photos(args.photos)][: args.time]
        report["time_per_photo"] = time_per_photo(model, paths)
    elif args.photos:
        result = evaluate_photos(model, args.photos, naive=args.naive)
        report["photos"] = {
            "folder": str(args.photos),
            "pipeline": "naive" if args.naive else "read_digits",
            **result.as_json(),
        }
        for path, truth, answer in result.mistakes[:20]:
            logger.info("wrong: %s is %s, read %s", path, truth, answer)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
