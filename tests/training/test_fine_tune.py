"""Fine-tuning the top of the backbone on real flower photos: with `Keep`, the pretrained ImageNet head
still says of photos of other things what it said before, which the refusal relies on."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CLASSES = ("daisy", "roses", "sunflowers")


def _imagenet_answers(backbone, imagenet: tuple[np.ndarray, np.ndarray], pixels: np.ndarray) -> np.ndarray:
    from training.imagenet_evidence import imagenet_probabilities

    return imagenet_probabilities(np.asarray(backbone.predict_on_batch(pixels.astype(np.float32))), *imagenet)


def _mean_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.mean(np.sum(p * (np.log(p + 1e-9) - np.log(q + 1e-9)), axis=1)))


def _same_top_class(p: np.ndarray, q: np.ndarray) -> int:
    return int(np.sum(p.argmax(axis=1) == q.argmax(axis=1)))


def test_keeping_the_imagenet_answers_holds_them_where_a_plain_fine_tune_moves_them(
    flowers_path: Path, flower_backbone
) -> None:
    from inference.flowers import flower_input
    from training.effnet_lite0 import imagenet_head
    from training.fine_tune import FineTuneConfig, Keep, fine_tune
    from training.flower_data import load_pixels
    from training.non_flowers import package_photos

    paths, labels = [], []
    for label, name in enumerate(CLASSES):
        for photo in sorted((flowers_path / name).glob("*.jpg"))[:10]:
            paths.append(photo)
            labels.append(label)
    train = (paths[::2], np.array(labels[::2]))
    validation = (paths[1::2], np.array(labels[1::2]))
    rng = np.random.default_rng(0)
    head = (rng.normal(0, 0.01, (1280, len(CLASSES))).astype(np.float32), np.zeros(len(CLASSES), np.float32))
    imagenet = imagenet_head()
    others = [flower_input(image) for _, image in itertools.islice(package_photos(), 16)]
    kept, held = others[::2], np.stack(others[1::2])  # held: photos the fine-tuning never saw
    # a fast rate and no early stop, so that the plain fine-tune surely moves the features
    config = FineTuneConfig(variants=1, epochs=3, learning_rate=3e-4, patience=10, seed=1)

    before = _imagenet_answers(flower_backbone, imagenet, held)
    plain, _, _ = fine_tune(flower_backbone, head, train, validation, config)
    kept_tune, kernel, _ = fine_tune(
        flower_backbone, head, train, validation, config, keep=Keep(imagenet, kept)
    )

    assert kernel.shape == (1280, len(CLASSES))
    drift_plain = _mean_kl(before, _imagenet_answers(plain, imagenet, held))
    drift_kept = _mean_kl(before, _imagenet_answers(kept_tune, imagenet, held))
    agree_plain = _same_top_class(before, _imagenet_answers(plain, imagenet, held))
    agree_kept = _same_top_class(before, _imagenet_answers(kept_tune, imagenet, held))
    assert drift_plain > 0.05  # the plain fine-tune did move what the ImageNet head says
    assert drift_kept < 0.8 * drift_plain
    assert agree_kept >= agree_plain
    tuned_pixels = load_pixels(paths[0])[None].astype(np.float32)
    assert not np.allclose(
        kept_tune.predict_on_batch(tuned_pixels), flower_backbone.predict_on_batch(tuned_pixels), atol=1e-4
    )
