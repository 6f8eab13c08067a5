"""The flower head and "not a flower" detector on a subset of the real photos, and the served model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.flowers import PREPROCESSING_ID, flower_input, flowers_prediction
from inference.model_store import MODEL_FILE, ModelStore, ModelVersion
from training.effnet_lite0 import backbone_id
from training.flower_data import BottleneckCache, Pixels, bottlenecks, list_photos, load_pixels, split_photos
from training.flower_model import (
    HEAD_FILE,
    FlowerHead,
    assemble_flower_model,
    build_serving_flower_model,
    export_shipped,
    seed_flower_model,
)
from training.flower_refusal import PHOTOS, fit_detector
from training.non_flowers import draw_face, synthetic_non_flowers
from training.numpy_fit import softmax
from training.ood import calibrate, fit_ood
from training.photo_bank import PhotoBank
from training.train_flowers import FlowerConfig, decide, train_head

# Stated accuracy of the head trained on ~230 photos (every 9th of the set), measured on ~50 held-out ones.
SUBSET_ACCURACY = 0.85


@dataclass
class Subset:
    classes: list[str]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    photos: dict[str, list]
    head: FlowerHead
    thresholds: object
    others: np.ndarray  # features of drawn non-flower photos (a seed not used for calibration)


@pytest.fixture(scope="module")
def subset(
    flowers_path: Path,
    mnist_path: Path,
    flower_backbone: keras.Model,
    tmp_path_factory: pytest.TempPathFactory,
) -> Subset:
    found = list_photos(flowers_path)
    photos = found.photos[::9]
    splits = split_photos(photos, 15, 15)
    cache = BottleneckCache(tmp_path_factory.mktemp("cache"), "subset")
    x, y = {}, {}
    for name, items in splits.items():
        x[name] = bottlenecks(items, cache, flower_backbone.predict_on_batch).features
        y[name] = np.array([found.classes.index(p.label) for p in items])
    kernel, bias, _ = train_head(
        (x["train"], y["train"]), (x["validation"], y["validation"]), 5, FlowerConfig()
    )
    head = FlowerHead(kernel, bias, fit_ood(x["train"], y["train"], 5))

    def drawn(seed: int, count: int) -> list[Pixels]:
        return [
            Pixels.of(flower_input(image))
            for _, image in synthetic_non_flowers(count, seed, mnist_file=mnist_path)
        ]

    calibration = bottlenecks(drawn(11, 30), cache, flower_backbone.predict_on_batch).features
    others = bottlenecks(drawn(12, 30), cache, flower_backbone.predict_on_batch).features
    thresholds = calibrate(
        head.ood.distances(x["validation"]).min(1),
        softmax(x["validation"] @ kernel + bias).max(1),
        head.ood.distances(calibration).min(1),
    )
    return Subset(found.classes, x, y, splits, head, thresholds, others)


@pytest.mark.slow  # the `subset` fixture trains a head on real photos
def test_the_head_on_a_small_subset_beats_the_stated_accuracy(subset: Subset) -> None:
    assert len(subset.y["train"]) > 200 and len(subset.y["test"]) > 35
    predicted = softmax(subset.x["test"] @ subset.head.kernel + subset.head.bias).argmax(1)
    accuracy = float(np.mean(predicted == subset.y["test"]))
    assert accuracy >= SUBSET_ACCURACY, f"{accuracy:.1%} on {len(predicted)} held-out photos"


@pytest.mark.slow  # the `subset` fixture trains a head on real photos
def test_flowers_pass_and_drawn_non_flowers_are_refused(subset: Subset) -> None:
    head = subset.head
    flowers = decide(
        softmax(subset.x["test"] @ head.kernel + head.bias),
        head.ood.distances(subset.x["test"]),
        subset.thresholds,
    )
    others = decide(
        softmax(subset.others @ head.kernel + head.bias), head.ood.distances(subset.others), subset.thresholds
    )
    assert np.mean(flowers == "ok") >= 0.85
    assert np.mean(others != "ok") >= 0.9
    assert np.mean(others == "not_recognized") >= 0.7
    assert subset.thresholds.unsure_above <= subset.thresholds.reject_above


def _version(tmp_path: Path, model: keras.Model, subset: Subset) -> ModelVersion:
    store = ModelStore(tmp_path / "models")
    meta = {
        "labels": subset.classes,
        "preprocessing": PREPROCESSING_ID,
        "ood": subset.thresholds.as_meta(),
        "backbone": backbone_id(),
    }
    with store.new_version("flowers", meta) as staged:
        model.save(staged.path / MODEL_FILE)
        subset.head.save(staged.path / HEAD_FILE)
    return store.get("flowers", staged.version)


@pytest.mark.slow  # the `subset` fixture trains a head on real photos
def test_the_served_model_computes_what_training_measured_and_answers_photos(
    subset: Subset, flower_backbone: keras.Model, tmp_path: Path
) -> None:
    version = _version(tmp_path, assemble_flower_model(flower_backbone, subset.head), subset)
    model = keras.saving.load_model(version.model_file, safe_mode=True)
    test_photos = subset.photos["test"][:24]
    pixels = np.stack([load_pixels(p.path) for p in test_photos]).astype(np.float32)
    probabilities, distances = (np.asarray(o) for o in model.predict_on_batch(pixels))
    features = np.asarray(flower_backbone.predict_on_batch(pixels))
    np.testing.assert_allclose(
        probabilities, softmax(features @ subset.head.kernel + subset.head.bias), atol=1e-5
    )
    np.testing.assert_allclose(distances, subset.head.ood.distances(features), rtol=2e-3, atol=0.5)

    answers = [
        flowers_prediction([p[None], d[None]], version) for p, d in zip(probabilities, distances, strict=True)
    ]
    right = [
        a.label == photo.label for a, photo in zip(answers, test_photos, strict=True) if a.status == "ok"
    ]
    assert len(right) >= 16 and np.mean(right) >= 0.8
    assert all(a.model == "flowers" and a.version == version.version and len(a.top) == 5 for a in answers)

    face = draw_face(np.random.default_rng(7))
    outputs = model.predict_on_batch(flower_input(face)[None].astype(np.float32))
    refused = flowers_prediction(outputs, version)
    assert refused.status == "not_recognized" and refused.label is None and refused.reason


@pytest.mark.slow  # the `subset` fixture trains a head on real photos
def test_a_photo_bank_version_serves_what_training_measured(
    subset: Subset, flower_backbone: keras.Model, tmp_path: Path
) -> None:
    """The detector by the nearest training photos (the default), through the saved model as served:
    its distances output is the bank's, the answers are the NumPy reference's, a drawn face is refused,
    and the head file keeps the bank."""
    calibration = subset.x["validation"]
    confidences = softmax(calibration @ subset.head.kernel + subset.head.bias).max(1)
    detector = fit_detector(
        PHOTOS,
        (subset.x["train"], subset.y["train"]),
        5,
        calibration,
        confidences,
        subset.others,
        rank=32,
        keep_flowers=0.99,
        other_pass=0.01,
    )
    bank = detector.params
    assert isinstance(bank, PhotoBank) and sum(bank.counts) == len(subset.y["train"])
    head = FlowerHead(subset.head.kernel, subset.head.bias, bank)
    store = ModelStore(tmp_path / "models")
    meta = {"labels": subset.classes, "preprocessing": PREPROCESSING_ID, "ood": detector.meta}
    with store.new_version("flowers", meta) as staged:
        assemble_flower_model(flower_backbone, head).save(staged.path / MODEL_FILE)
        head.save(staged.path / HEAD_FILE)
    version = store.get("flowers", staged.version)
    reloaded = FlowerHead.load(version.path / HEAD_FILE)
    assert isinstance(reloaded.ood, PhotoBank) and reloaded.ood.counts == bank.counts
    np.testing.assert_array_equal(reloaded.ood.features, bank.features)

    model = keras.saving.load_model(version.model_file, safe_mode=True)
    test_photos = subset.photos["test"][:24]
    pixels = np.stack([load_pixels(p.path) for p in test_photos]).astype(np.float32)
    probabilities, distances = (np.asarray(o) for o in model.predict_on_batch(pixels))
    features = np.asarray(flower_backbone.predict_on_batch(pixels))
    np.testing.assert_allclose(distances, bank.photo_distances(features), atol=2e-3)
    served = [flowers_prediction([p, d], version) for p, d in zip(probabilities, distances, strict=True)]
    expected = decide(probabilities, bank.distances(features), detector.thresholds)
    assert [a.status for a in served] == list(expected)
    assert np.mean([a.label == photo.label for a, photo in zip(served, test_photos, strict=True)]) >= 0.8

    face = draw_face(np.random.default_rng(7))
    refused = flowers_prediction(model.predict_on_batch(flower_input(face)[None].astype(np.float32)), version)
    assert refused.status == "not_recognized" and refused.label is None


@pytest.mark.slow  # the `subset` fixture trains a head on real photos
def test_the_rule_between_ok_unsure_and_not_recognized(subset: Subset, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    ood = {"unsure_above": 100.0, "reject_above": 200.0, "min_confidence": 0.5}
    with store.new_version("flowers", {"labels": ["a", "b", "c"], "ood": ood}):
        pass
    version = store.get("flowers", 1)
    sure = np.array([0.1, 0.8, 0.1])
    assert flowers_prediction([sure, np.array([150.0, 90.0, 300.0])], version).status == "ok"
    unsure_far = flowers_prediction([sure, np.array([150.0, 120.0, 300.0])], version)
    assert (unsure_far.status, unsure_far.label) == ("unsure", "b")
    unsure_close = flowers_prediction([np.array([0.4, 0.35, 0.25]), np.array([50.0, 60.0, 70.0])], version)
    assert (unsure_close.status, unsure_close.label) == ("unsure", "a")
    refused = flowers_prediction(
        {"probabilities": sure, "distances": np.array([250.0, 201.0, 300.0])}, version
    )
    assert (refused.status, refused.label, refused.confidence) == ("not_recognized", None, 0.0)
    assert refused.top[0] == ("b", pytest.approx(0.8))


def test_an_image_classifier_answers_in_its_own_models_name(tmp_path: Path) -> None:
    """Any image classifier of the catalogue answers through `flowers_prediction`: the answer names
    the model its version belongs to, so a "pets" photo is recorded (and labelled) as pets."""
    store = ModelStore(tmp_path)
    ood = {"unsure_above": 100.0, "reject_above": 200.0, "min_confidence": 0.5}
    with store.new_version("pets", {"labels": ["bird", "dog"], "ood": ood}):
        pass
    answer = flowers_prediction([np.array([0.1, 0.9]), np.array([150.0, 20.0])], store.get("pets", 1))
    assert (answer.model, answer.version, answer.label, answer.status) == ("pets", 1, "dog", "ok")


def test_a_refusal_names_the_model_and_shows_a_taught_models_small_distances(tmp_path: Path) -> None:
    """A taught model's cosine scores stay near 1: its reason shows them with decimals ("1.32 > 1.05",
    not "1 > 1"), and says which model's labels the photo is none of."""
    store = ModelStore(tmp_path)
    ood = {"unsure_above": 0.9, "reject_above": 1.05, "min_confidence": 0.5}
    with store.new_version("pets", {"labels": ["bird", "dog"], "ood": ood}):
        pass
    refused = flowers_prediction([np.array([0.1, 0.9]), np.array([1.4, 1.32])], store.get("pets", 1))
    assert refused.status == "not_recognized"
    assert refused.reason == "not one of the known pets (distance 1.32 > 1.05)"
    unsure = flowers_prediction([np.array([0.1, 0.9]), np.array([1.4, 0.95])], store.get("pets", 1))
    assert unsure.status == "unsure"
    assert unsure.reason == "unlike the pets seen in training (distance 0.95 > 0.90)"


@pytest.mark.slow  # the `subset` fixture trains a head on real photos
def test_the_shipped_head_seeds_an_empty_store_once(
    subset: Subset, flower_backbone: keras.Model, tmp_path: Path
) -> None:
    trained = _version(tmp_path / "trained", assemble_flower_model(flower_backbone, subset.head), subset)
    shipped = export_shipped(trained, tmp_path / "shipped")
    assert sorted(p.name for p in shipped.iterdir()) == ["head.npz", "meta.json"]
    assert (shipped / HEAD_FILE).stat().st_size < 500_000
    store = ModelStore(tmp_path / "store")
    seeded = seed_flower_model(store, shipped)
    assert seeded is not None and store.active_version("flowers") == seeded.version == 1
    assert seeded.meta["preprocessing"] == PREPROCESSING_ID and seeded.labels == subset.classes
    assert seed_flower_model(store, shipped) is None and len(store.versions("flowers")) == 1
    served = keras.saving.load_model(seeded.model_file, safe_mode=True)
    photo = subset.photos["test"][0]
    pixels = load_pixels(photo.path)[None].astype(np.float32)
    expected = build_serving_flower_model(shipped / HEAD_FILE, flower_backbone).predict_on_batch(pixels)
    for got, want in zip(served.predict_on_batch(pixels), expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def test_flower_input_is_the_centre_224_of_the_shorter_side_256() -> None:
    image = Image.new("RGB", (512, 300), (0, 0, 255))
    ImageDraw.Draw(image).rectangle([236, 130, 276, 170], fill=(255, 0, 0))  # a red square in the centre
    pixels = flower_input(image)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[112, 112]) == (255, 0, 0) and tuple(pixels[5, 5]) == (0, 0, 255)
    grey = flower_input(Image.new("L", (100, 80), 77))
    assert grey.shape == (224, 224, 3) and np.all(grey == 77)
