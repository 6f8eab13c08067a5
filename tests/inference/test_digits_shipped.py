"""The shipped default digit model: small, self-describing, and good on MNIST and on photo-like images."""

import json

import keras
import numpy as np
import pytest

from inference.digits import LABELS, PREPROCESSING_ID
from tests.support import REPO
from training.evaluation import read_photo
from training.synth_photos import NO_DIGIT, random_style, render_non_digit, render_photo
from training.train_digits import mnist_accuracy, mnist_inputs

SHIPPED = REPO / "inference" / "shipped" / "digits"


@pytest.fixture(scope="module")
def model():
    return keras.saving.load_model(SHIPPED / "model.keras", compile=False, safe_mode=True)


@pytest.fixture(scope="module")
def mnist_test(mnist_path):
    with np.load(mnist_path) as data:
        return data["x_test"], data["y_test"].astype(np.int64)


def test_the_shipped_model_is_small_and_says_how_it_was_made():
    assert (SHIPPED / "model.keras").stat().st_size < 2_000_000
    meta = json.loads((SHIPPED / "meta.json").read_text())
    assert meta["labels"] == list(LABELS) and meta["preprocessing"] == PREPROCESSING_ID
    assert meta["command"].startswith("photobot train digits")
    assert meta["test_accuracy"] >= 0.995 and meta["epochs"] >= 1
    assert "photos" in meta["metrics"]


def test_the_shipped_model_has_no_optimizer_state(model):
    assert getattr(model, "optimizer", None) is None
    out = model.predict_on_batch(np.zeros((2, 28, 28, 1), np.float32))
    assert out.shape == (2, 10)


@pytest.mark.slow
def test_the_shipped_model_reaches_its_mnist_figure(model, mnist_test):
    x_test, y_test = mnist_test
    assert mnist_accuracy(model, mnist_inputs(x_test, framed=True), y_test) >= 0.995


@pytest.mark.slow
def test_the_shipped_model_reads_photo_like_images(model, mnist_test):
    """120 photos of MNIST test digits under random conditions; the full set measures ≥ 99%."""
    x_test, y_test = mnist_test
    rng = np.random.default_rng(2024)
    right = 0
    for index in rng.choice(len(x_test), 120, replace=False):
        data, label = render_photo(
            [x_test[index]], rng, random_style(rng, size=(640, 480)), labels=[y_test[index]]
        )
        right += read_photo(data, model).label == label
    assert right >= 114  # 95%


@pytest.mark.slow
def test_a_number_is_read_as_a_number(model, mnist_test):
    x_test, y_test = mnist_test
    rng = np.random.default_rng(7)
    right = 0
    for _ in range(10):
        chosen = rng.choice(len(x_test), 4, replace=False)
        style = random_style(rng, size=(960, 720), digit_height=0.2, rotation=0.0, tilt=0.0)
        data, label = render_photo([x_test[i] for i in chosen], rng, style, labels=y_test[chosen])
        answer = read_photo(data, model)
        right += answer.label == label
        if answer.label == label:
            assert len(answer.digits) == 4
    assert right >= 8


def test_blank_pages_and_textures_are_not_recognized(model):
    rng = np.random.default_rng(3)
    for kind in ("blank", "texture"):
        for _ in range(4):
            answer = read_photo(render_non_digit(rng, random_style(rng, size=(640, 480)), kind), model)
            assert answer.status == "not_recognized" and answer.label is None


@pytest.mark.slow
def test_scenes_rarely_get_a_confident_digit(model):
    rng = np.random.default_rng(4)
    confident = sum(
        read_photo(render_non_digit(rng, random_style(rng, size=(640, 480)), "scene"), model).status == "ok"
        for _ in range(30)
    )
    assert confident <= 6, f"{confident} of 30 scenes answered with a confident digit"
    assert NO_DIGIT == "none"
