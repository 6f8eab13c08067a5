"""The synthetic phone photos: real JPEGs with the conditions asked for, and labelled folder sets."""

import io
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from training.synth_photos import (
    BOARDS,
    CHALKS,
    NO_DIGIT,
    PhotoStyle,
    random_style,
    render_non_digit,
    render_photo,
    write_set,
)

SMALL = PhotoStyle(size=(480, 360), digit_height=0.4)


@pytest.fixture(scope="module")
def digits(mnist_path):
    with np.load(mnist_path) as data:
        return data["x_test"][:50], data["y_test"][:50]


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def test_a_photo_is_a_jpeg_of_the_asked_size_with_its_label(digits):
    images, labels = digits
    data, label = render_photo([images[0]], np.random.default_rng(0), SMALL, labels=[labels[0]])
    assert label == str(labels[0])
    image = _open(data)
    assert image.size == (480, 360)
    gray = np.asarray(image.convert("L"), float)
    assert np.median(gray) > 200 and gray.min() < 80  # dark ink on light paper


def test_a_number_is_labelled_left_to_right(digits):
    images, labels = digits
    chosen = (1, 0, 3)
    _, label = render_photo(
        [images[i] for i in chosen], np.random.default_rng(0), SMALL, labels=labels[list(chosen)]
    )
    assert label == "".join(str(labels[i]) for i in chosen) == "270"


def test_chalk_on_a_board_is_light_on_dark(digits):
    images, _ = digits
    style = replace(SMALL, paper=BOARDS["blackboard"], ink=CHALKS["white chalk"])
    gray = np.asarray(
        _open(render_photo([images[0]], np.random.default_rng(0), style)[0]).convert("L"), float
    )
    assert np.median(gray) < 70 and gray.max() > 180
    assert style.light_on_dark


def test_exif_orientation_is_written_and_undoing_it_gives_the_upright_photo(digits):
    images, _ = digits
    upright, _ = render_photo([images[0]], np.random.default_rng(4), SMALL)
    turned, _ = render_photo([images[0]], np.random.default_rng(4), replace(SMALL, exif_orientation=6))
    stored = _open(turned)
    assert stored.getexif()[0x0112] == 6 and stored.size == (360, 480)
    a = np.asarray(ImageOps.exif_transpose(stored).convert("L"), float)
    b = np.asarray(_open(upright).convert("L"), float)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0


def test_the_same_seed_gives_the_same_photo(digits):
    images, _ = digits
    style = random_style(np.random.default_rng(9))
    first = render_photo([images[3]], np.random.default_rng(1), style)[0]
    second = render_photo([images[3]], np.random.default_rng(1), style)[0]
    assert first == second


def test_random_styles_cover_both_polarities_rulings_and_rotations():
    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(300)]
    assert 0.05 < np.mean([s.light_on_dark for s in styles]) < 0.3
    assert any(s.ruled and not s.squared for s in styles) and any(s.squared for s in styles)
    assert {s.exif_orientation for s in styles} == {1, 3, 6, 8}
    heights = [s.digit_height for s in styles]
    assert min(heights) < 0.15 and max(heights) > 0.6


@pytest.mark.parametrize("kind", ["blank", "scene", "texture"])
def test_non_digit_photos_are_jpegs(kind):
    image = _open(render_non_digit(np.random.default_rng(0), SMALL, kind))
    assert image.size == (480, 360)


def test_a_folder_set_has_one_sub_folder_per_label(digits, tmp_path):
    images, labels = digits
    counts = write_set(
        tmp_path / "set", images, labels, 30, seed=1, numbers=0.2, no_digit=0.2, size=(320, 240)
    )
    assert sum(counts.values()) == 30
    on_disk = {p.name: len(list(p.glob("*.jpg"))) for p in (tmp_path / "set").iterdir()}
    assert on_disk == counts
    assert NO_DIGIT in counts and any(len(label) > 1 and label != NO_DIGIT for label in counts)
    singles = [label for label in counts if len(label) == 1]
    assert singles and all(label.isdigit() for label in singles)


def test_the_command_writes_a_set_from_the_test_digits(tmp_path, mnist_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.synth_photos",
            "--out",
            str(tmp_path / "out"),
            "--n",
            "12",
            "--size",
            "320x240",
            "--datasets",
            str(mnist_path.parent),
            "--data-dir",
            str(tmp_path / "var"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": ""},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 12 photos" in result.stdout
    assert len(list((tmp_path / "out").glob("*/*.jpg"))) == 12
