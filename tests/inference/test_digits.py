"""read_digits on generated phone photos, one condition at a time, and the answer rules of digits_prediction.

A crop is judged against the MNIST digit the photo was made from, framed the MNIST way by
`normalize_digit`: the two must look alike (correlation of their pixels), so these tests need no model.
"""

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from inference.decode import decode_image
from inference.digits import (
    DECODE_SIZE,
    LABELS,
    NOT_RECOGNIZED_BELOW,
    UNSURE_BELOW,
    digits_prediction,
    label_components,
    normalize_digit,
    read_digits,
    remove_ruled_lines,
)
from training.synth_photos import BOARDS, CHALKS, INKS, PAPERS, PhotoStyle, render_non_digit, render_photo

LIMITS = {"max_bytes": 20_000_000, "max_pixels": 40_000_000}
PLAIN = PhotoStyle(size=(1280, 960), digit_height=0.35, centre=(0.5, 0.5), jpeg_quality=90)

CONDITIONS = {
    "plain paper, black pen": {},
    "cream paper, blue pen": {"paper": PAPERS["cream"], "ink": INKS["blue pen"]},
    "coloured paper, red pen": {"paper": PAPERS["pink"], "ink": INKS["red pen"]},
    "ruled paper": {"ruled": 0.07, "line_colour": (150, 175, 220), "line_width": 0.003},
    "squared paper": {"ruled": 0.06, "squared": True, "line_colour": (160, 160, 160)},
    "tilted ruled paper": {"ruled": 0.08, "tilt": 4.0},
    "strong lighting gradient": {"gradient": 0.55, "gradient_angle": 30.0},
    "vignetting": {"vignette": 0.35},
    "soft shadow": {"shadow": 0.35, "gradient_angle": 120.0},
    "blur": {"blur": 0.0025},
    "sensor noise": {"noise": 10.0},
    "low JPEG quality": {"jpeg_quality": 50},
    "rotated digit": {"rotation": 14.0},
    "small digit in a corner": {"digit_height": 0.12, "centre": (0.15, 0.2)},
    "digit filling the frame": {"digit_height": 0.8},
    "faint pencil": {"ink": INKS["pencil"], "ink_opacity": 0.55},
    "thick marker": {"ink": INKS["marker"], "thickness": 0.9},
    "fine pen": {"thickness": 0.1},
    "portrait photo": {"size": (960, 1280)},
    "chalk on a blackboard": {
        "paper": BOARDS["blackboard"],
        "ink": CHALKS["white chalk"],
        "ink_opacity": 0.9,
    },
    "chalk on a green board": {
        "paper": BOARDS["greenboard"],
        "ink": CHALKS["yellow chalk"],
        "ink_opacity": 0.85,
    },
    "everything at once": {
        "paper": PAPERS["cream"],
        "ink": INKS["blue pen"],
        "ruled": 0.07,
        "gradient": 0.4,
        "vignette": 0.2,
        "blur": 0.0015,
        "noise": 6.0,
        "jpeg_quality": 60,
        "rotation": -8.0,
        "digit_height": 0.25,
        "centre": (0.3, 0.65),
    },
}


@pytest.fixture(scope="module")
def mnist_test(mnist_path):
    with np.load(mnist_path) as data:
        return data["x_test"], data["y_test"]


def _read(data: bytes):
    image = decode_image(data, target_size=DECODE_SIZE, grayscale=True, **LIMITS)
    return read_digits(image)


def _likeness(crop: np.ndarray, digit: np.ndarray, rotation: float = 0.0) -> float:
    if rotation:
        digit = np.asarray(Image.fromarray(digit).rotate(rotation, resample=Image.BILINEAR))
    return float(np.corrcoef(crop.ravel(), normalize_digit(digit).ravel())[0, 1])


def _assert_reads(mnist_test, style: PhotoStyle, indices, seed: int = 0):
    images, labels = mnist_test
    rng = np.random.default_rng(seed)
    for index in indices:
        data, label = render_photo([images[index]], rng, style, labels=[labels[index]])
        found = _read(data)
        assert found.reason is None, f"digit {label} (test #{index}): {found.reason}"
        assert found.crops.shape == (1, 28, 28), f"digit {label} (test #{index}) read as {len(found.crops)}"
        likeness = _likeness(found.crops[0], images[index], style.rotation + style.tilt)
        assert likeness > 0.6, f"digit {label} (test #{index}): crop unlike the digit ({likeness:.2f})"


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_single_digit_is_found_and_framed_like_mnist(mnist_test, condition):
    _assert_reads(mnist_test, replace(PLAIN, **CONDITIONS[condition]), indices=(0, 1, 2, 3, 4))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_photos_are_read_upright(mnist_test, orientation):
    _assert_reads(mnist_test, replace(PLAIN, exif_orientation=orientation), indices=(7, 11, 18))


def test_an_exif_rotated_photo_reads_the_same_as_the_upright_one(mnist_test):
    images, labels = mnist_test
    upright, _ = render_photo([images[5]], np.random.default_rng(3), PLAIN, labels=[labels[5]])
    turned, _ = render_photo([images[5]], np.random.default_rng(3), replace(PLAIN, exif_orientation=6))
    a, b = _read(upright).crops[0], _read(turned).crops[0]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_crops_are_mnist_shaped_and_centred_by_mass(mnist_test):
    images, labels = mnist_test
    data, _ = render_photo([images[0]], np.random.default_rng(1), PLAIN, labels=[labels[0]])
    crop = _read(data).crops[0]
    assert crop.dtype == np.float32 and crop.min() >= 0.0 and crop.max() <= 1.0 and crop.max() > 0.9
    ys, xs = np.mgrid[0:28, 0:28]
    assert abs((crop * ys).sum() / crop.sum() - 14.0) < 0.5  # where MNIST puts the centre of mass
    assert abs((crop * xs).sum() / crop.sum() - 14.0) < 0.5
    rows = np.flatnonzero(crop.max(axis=1) > 0.05)
    cols = np.flatnonzero(crop.max(axis=0) > 0.05)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21, 22)  # fitted into 20×20


def test_mnist_digits_framed_by_serving_come_back_as_mnist_made_them(mnist_test):
    """The served framing is MNIST's own: box into 20×20, centre of mass at (14, 14). Re-framing an
    MNIST digit must give the digit back, or a model trained on raw MNIST loses accuracy in serving."""
    images, _ = mnist_test
    framed = np.stack([normalize_digit(image) for image in images[:2000]])
    original = images[:2000].astype(np.float32) / 255.0
    assert np.abs(framed - original).mean() < 1e-3
    # every pixel as MNIST made it, but for the faintest edge (≤ 5% ink) that the box leaves out
    assert np.abs(framed - original).max() <= 0.05 + 1e-6


@pytest.mark.parametrize(
    "number_indices",
    [(1, 0, 3, 21), (2, 4), (9, 8, 7)],
    ids=["four digits", "two digits", "three digits"],
)
def test_several_digits_in_a_row_are_read_left_to_right(mnist_test, number_indices):
    images, labels = mnist_test
    style = replace(PLAIN, digit_height=0.22, spacing=0.3)
    data, label = render_photo(
        [images[i] for i in number_indices],
        np.random.default_rng(2),
        style,
        labels=[labels[i] for i in number_indices],
    )
    found = _read(data)
    assert len(found.crops) == len(number_indices), f"{label} read as {len(found.crops)} digits"
    for crop, index in zip(found.crops, number_indices, strict=True):
        assert _likeness(crop, images[index]) > 0.6
    lefts = [box[0] for box in found.boxes]
    assert lefts == sorted(lefts)


@pytest.mark.parametrize("kind", ["blank", "texture"])
def test_a_photo_without_a_digit_gives_no_crops_and_a_reason(kind):
    rng = np.random.default_rng(5)
    for _ in range(3):
        found = _read(render_non_digit(rng, PLAIN, kind))
        assert len(found.crops) == 0 and found.reason


def test_a_blank_ruled_page_gives_no_crops():
    style = replace(PLAIN, ruled=0.07, gradient=0.3, noise=4.0)
    found = _read(render_non_digit(np.random.default_rng(0), style, "blank"))
    assert len(found.crops) == 0 and found.reason


def test_ruled_lines_are_erased_but_a_stroke_crossing_them_stays_whole():
    mask = np.zeros((120, 200), bool)
    mask[30:32, :] = True  # a ruled line across the page
    mask[80:82, 5:195] = True  # another
    mask[10:60, 100:104] = True  # a vertical stroke crossing the first line
    cleaned = remove_ruled_lines(mask)
    assert not cleaned[30:32, :90].any() and not cleaned[80:82].any()
    assert cleaned[10:60, 100:104].all()
    _, components = label_components(cleaned)
    assert len(components) == 1


def test_components_are_eight_connected_with_exact_boxes():
    mask = np.zeros((10, 12), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # a diagonal: one component
    mask[6:9, 5:11] = True
    labels, components = label_components(mask)
    boxes = sorted((c.top, c.left, c.bottom, c.right, c.area) for c in components)
    assert boxes == [(1, 1, 4, 4, 3), (6, 5, 9, 11, 18)]
    assert labels[1, 1] == labels[3, 3] != labels[7, 7]


def test_digits_prediction_for_one_sure_digit():
    probs = np.full((1, 10), 0.002)
    probs[0, 7], probs[0, 1] = 0.97, 0.012
    answer = digits_prediction(probs, LABELS, version=3)
    assert (answer.model, answer.version, answer.label, answer.status) == ("digits", 3, "7", "ok")
    assert answer.confidence == pytest.approx(0.97)
    assert answer.top[0] == ("7", pytest.approx(0.97)) and answer.top[1] == ("1", pytest.approx(0.012))
    assert len(answer.digits) == 1


def test_digits_prediction_reads_a_number_with_the_product_of_confidences():
    probs = np.zeros((4, 10))
    for row, (digit, p) in enumerate([(2, 0.99), (0, 0.95), (2, 0.9), (6, 0.98)]):
        probs[row] = (1 - p) / 9
        probs[row, digit] = p
    answer = digits_prediction(probs, LABELS, version=1)
    assert answer.label == "2026" and answer.status == "ok"
    assert answer.confidence == pytest.approx(0.99 * 0.95 * 0.9 * 0.98)
    assert [d.label for d in answer.digits] == ["2", "0", "2", "6"]
    assert answer.top[0] == ("2", pytest.approx(0.9))  # the least sure digit's ranking


def test_digits_prediction_is_unsure_below_the_threshold_and_says_which_digit():
    probs = np.full((2, 10), 0.0)
    probs[0, 3] = 1.0
    probs[1, 5], probs[1, 6] = UNSURE_BELOW - 0.1, 1.1 - UNSURE_BELOW
    answer = digits_prediction(probs, LABELS)
    assert answer.status == "unsure" and answer.label == "35" and "5" in answer.reason


def test_digits_prediction_does_not_recognise_a_shapeless_answer():
    probs = np.full((1, 10), 0.1)
    probs[0, 4] = NOT_RECOGNIZED_BELOW - 0.05
    answer = digits_prediction(probs / probs.sum(), LABELS)
    assert answer.status == "not_recognized" and answer.label is None


def test_digits_prediction_with_no_crops_passes_the_reason_on():
    answer = digits_prediction(
        np.zeros((0, 10)), LABELS, version=2, reason="no marks stand out from the paper"
    )
    assert answer.status == "not_recognized" and answer.label is None and answer.confidence == 0.0
    assert answer.reason == "no marks stand out from the paper"


def test_read_digits_accepts_an_rgb_array_and_a_png():
    canvas = Image.new("L", (400, 300), 240)
    stroke = Image.new("L", (12, 120), 20)
    canvas.paste(stroke, (200, 90))  # a "1"
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    from_png = _read(buffer.getvalue())
    from_array = read_digits(np.asarray(canvas.convert("RGB")))
    assert len(from_png.crops) == len(from_array.crops) == 1
    assert np.abs(from_png.crops - from_array.crops).max() < 0.05
