"""Restyling MNIST training digits (other writers' handwriting): real digits, checked by what they become.

The shipped digit model is the judge of "still the same digit": it never saw these restyled copies.
"""

from dataclasses import replace

import keras
import numpy as np
import pytest

from inference.digits import normalize_digit
from tests.support import REPO
from training.style_augment import DEFAULT_STYLE, Style, restyle, restyled_digits, restyled_uint8
from training.train_digits import mnist_inputs, with_restyled_copies

PLAIN = Style(
    flag_on_one=0.0,
    bar_on_seven=0.0,
    shear=0.0,
    aspect=(1.0, 1.0),
    rotation=0.0,
    elastic=0.0,
    thicker=0,
    thinner=0,
)


@pytest.fixture(scope="module")
def mnist_train(mnist_path):
    with np.load(mnist_path) as data:
        return data["x_train"][:2000], data["y_train"][:2000].astype(np.int64)


@pytest.fixture(scope="module")
def shipped():
    path = REPO / "inference" / "shipped" / "digits" / "model.keras"
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _read(model, crops: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(crops[..., np.newaxis])).argmax(axis=1)


def _ink(image: np.ndarray) -> int:
    return int((image > 0.5).sum())


def test_an_unchanged_style_frames_like_the_digit_itself(mnist_train, shipped):
    images, labels = mnist_train
    rng = np.random.default_rng(0)
    plain = np.stack(
        [
            normalize_digit(restyle(image, int(label), rng, PLAIN))
            for image, label in zip(images[:200], labels[:200], strict=True)
        ]
    )
    direct = mnist_inputs(images[:200], framed=True)[..., 0]
    assert np.mean(_read(shipped, plain) == _read(shipped, direct)) >= 0.99
    assert np.mean(np.abs(plain - direct)) < 0.05


def test_thickened_strokes_cover_more_pixels_and_still_read_right(mnist_train, shipped):
    images, labels = mnist_train
    thick = replace(PLAIN, thicker=2, thinner=-2)  # always exactly two dilations
    rng = np.random.default_rng(1)
    before = [
        restyle(image, int(label), rng, PLAIN)
        for image, label in zip(images[:300], labels[:300], strict=True)
    ]
    after = [
        restyle(image, int(label), rng, thick)
        for image, label in zip(images[:300], labels[:300], strict=True)
    ]
    assert all(_ink(b) < _ink(a) for b, a in zip(before, after, strict=True))
    crops = np.stack([normalize_digit(a) for a in after])
    assert np.mean(_read(shipped, crops) == labels[:300]) >= 0.97


def test_thinned_strokes_cover_fewer_pixels_but_never_vanish(mnist_train):
    images, labels = mnist_train
    thin = replace(PLAIN, thicker=-2, thinner=2)  # always two erosions, as far as the ink allows
    rng = np.random.default_rng(2)
    thinner = 0
    for image, label in zip(images[:200], labels[:200], strict=True):
        plain, thinned = restyle(image, int(label), rng, PLAIN), restyle(image, int(label), rng, thin)
        assert 0.5 * _ink(plain) <= _ink(thinned) <= _ink(plain)
        thinner += _ink(thinned) < _ink(plain)
    # A 3×3 erosion takes ~2 px off a ~5 px stroke at 56 px: a digit already written with a fine pen
    # would lose more than half of its ink and is left as it is (83 of these 200 are thinned).
    assert thinner >= 60


def test_slant_and_aspect_change_the_shape_not_the_digit(mnist_train, shipped):
    images, labels = mnist_train
    rng = np.random.default_rng(3)
    narrow = replace(PLAIN, aspect=(0.7, 0.7))
    widths_plain, widths_narrow = [], []
    for image, label in zip(images[:200], labels[:200], strict=True):
        for style, widths in ((PLAIN, widths_plain), (narrow, widths_narrow)):
            ink = restyle(image, int(label), rng, style)
            cols = np.flatnonzero(ink.max(axis=0) > 0.5)
            rows = np.flatnonzero(ink.max(axis=1) > 0.5)
            widths.append((cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1))
    assert np.median(widths_narrow) < 0.8 * np.median(widths_plain)
    slanted = replace(PLAIN, shear=0.3, elastic=1.0)
    crops = np.stack(
        [
            normalize_digit(restyle(i, int(digit), rng, slanted))
            for i, digit in zip(images[:300], labels[:300], strict=True)
        ]
    )
    assert np.mean(_read(shipped, crops) == labels[:300]) >= 0.95


def test_ones_get_a_flag_and_sevens_a_bar_that_add_ink_at_the_expected_place(mnist_train):
    images, labels = mnist_train
    flagged = replace(PLAIN, flag_on_one=1.0, base_on_one=0.0)
    barred = replace(PLAIN, bar_on_seven=1.0)
    rng = np.random.default_rng(4)
    ones = [i for i, label in zip(images, labels, strict=True) if label == 1][:50]
    sevens = [i for i, label in zip(images, labels, strict=True) if label == 7][:50]
    for one in ones:
        plain, flag = restyle(one, 1, rng, PLAIN), restyle(one, 1, rng, flagged)
        added = (flag > 0.5) & ~(plain > 0.5)
        rows = np.flatnonzero(plain.max(axis=1) > 0.5)
        top_half = added[: (rows[0] + rows[-1]) // 2]
        assert top_half.sum() > 0.6 * added.sum() > 0  # the flag hangs from the top
    for seven in sevens:
        plain, bar = restyle(seven, 7, rng, PLAIN), restyle(seven, 7, rng, barred)
        assert _ink(bar) >= _ink(plain)


def test_restyled_training_digits_are_still_read_right_mostly(mnist_train, shipped):
    """The default style: other writers' digits, but the same digits (the shipped model reads them)."""
    images, labels = mnist_train
    crops = restyled_digits(images[:500], labels[:500], seed=5)
    assert crops.shape == (500, 28, 28) and crops.dtype == np.float32
    assert crops.min() >= 0.0 and crops.max() <= 1.0
    assert np.mean(_read(shipped, crops) == labels[:500]) >= 0.93


def test_restyling_is_reproducible_from_its_seed(mnist_train):
    images, labels = mnist_train
    first = restyled_digits(images[:50], labels[:50], seed=7)
    again = restyled_digits(images[:50], labels[:50], seed=7)
    other = restyled_digits(images[:50], labels[:50], seed=8)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_restyled_copies_are_added_beside_the_framed_digits(mnist_train):
    images, labels = mnist_train
    x = mnist_inputs(images[:40], framed=True)
    bigger_x, bigger_y = with_restyled_copies(x, labels[:40], images[:40], labels[:40], 2, seed=0)
    assert bigger_x.shape == (120, 28, 28, 1) and list(bigger_y) == list(labels[:40]) * 3
    assert np.array_equal(bigger_x[:40], x)


def test_a_restyled_digit_is_ink_the_photo_renderer_can_draw(mnist_train):
    images, labels = mnist_train
    image = restyled_uint8(images[0], int(labels[0]), np.random.default_rng(0), DEFAULT_STYLE)
    assert image.dtype == np.uint8 and image.max() > 200 and image.shape[0] >= 56


@pytest.mark.slow
def test_a_cnn_run_with_restyled_copies_says_so_in_its_meta(mnist_path, tmp_path):
    """1,000 digits + one restyled copy each + 20 photo digits (half restyled), one epoch."""
    from inference.model_store import ModelStore
    from training.train_digits import (
        DigitTrainingConfig,
        photo_training_digits,
        save_trained,
        train_digits,
    )

    with np.load(mnist_path) as data:
        mnist = (data["x_train"], data["y_train"].astype(np.int64), data["x_test"], data["y_test"])
    config = DigitTrainingConfig(arch="cnn", epochs=1, limit=1000, style_copies=1, photo_digits=20)
    photos = photo_training_digits(mnist[0][:1000], mnist[1][:1000], 20, seed=0, restyle=True)
    assert 15 <= len(photos[0]) <= 20 and photos[0].shape[1:] == (28, 28)
    trained = train_digits(config, mnist, photo_data=photos)
    version = save_trained(ModelStore(tmp_path / "models"), trained, command="test", promote=False)
    assert version.meta["data"]["restyled_digits"] == 1000
    assert version.meta["config"]["style_copies"] == 1
    assert len(trained.history["loss"]) == 1 and np.isfinite(trained.history["loss"][0])
