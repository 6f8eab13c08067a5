"""decode_image: refuses what is not a safe image, decodes JPEGs at reduced size, honours EXIF."""

import io
import json
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.errors import reply_for
from inference.decode import MAX_FULL_PIXELS, decode_image
from inference.errors import ImageTooLarge, UnsupportedImage
from photobot.settings import Settings
from tests.support import REPO

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo(width: int = 1280, height: int = 960) -> Image.Image:
    """A smooth colour picture with a dark square in the top-left quarter (to check orientation)."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 128)], axis=-1).astype(
        np.uint8
    )
    pixels[: height // 4, : width // 4] = 0
    return Image.fromarray(pixels)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height but whose data is a few bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_jpeg_is_decoded_at_reduced_size_but_never_below_the_target():
    data = _encode(_photo(), "JPEG", quality=90)
    image = decode_image(data, target_size=240, **LIMITS)
    assert image.mode == "RGB"
    assert min(image.size) >= 240 and image.size == (320, 240)
    full = decode_image(data, **LIMITS)
    assert full.size == (1280, 960)


def test_grayscale_decoding_returns_luminance_of_the_same_picture():
    data = _encode(_photo(), "JPEG", quality=95)
    gray = decode_image(data, target_size=240, grayscale=True, **LIMITS)
    colour = decode_image(data, target_size=240, **LIMITS).convert("L")
    assert gray.mode == "L" and gray.size == colour.size
    assert np.abs(np.asarray(gray, float) - np.asarray(colour, float)).mean() < 3.0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    upright = _photo(640, 480)
    stored = upright.transpose(
        {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[
            orientation
        ]
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    image = decode_image(data, **LIMITS)
    assert image.size == (640, 480)
    pixels = np.asarray(image.convert("L"), float)
    assert pixels[:120, :160].mean() < 20  # the dark square is back in the top-left corner
    assert pixels[360:, 480:].mean() > 100


def test_png_with_transparency_is_laid_on_white():
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (0, 0, 32, 64))
    decoded = decode_image(_encode(image, "PNG"), **LIMITS)
    pixels = np.asarray(decoded)
    assert decoded.mode == "RGB"
    assert pixels[:, :32].max() == 0 and pixels[:, 32:].min() == 255


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("L", (40, 40), value) for value in (10, 200, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    image = decode_image(buffer.getvalue(), **LIMITS)
    assert abs(float(np.asarray(image.convert("L")).mean()) - 10) < 3


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF"])
def test_accepted_formats_decode(fmt):
    data = _encode(_photo(200, 150).convert("RGB"), fmt)
    assert decode_image(data, **LIMITS).size == (200, 150)


def test_random_bytes_are_not_an_image():
    with pytest.raises(UnsupportedImage, match="not an image"):
        decode_image(np.random.default_rng(0).bytes(5000), **LIMITS)


def test_text_is_not_an_image():
    with pytest.raises(UnsupportedImage):
        decode_image(b"%PDF-1.4 hello, this is a document and not a photo\n" * 20, **LIMITS)


def test_empty_bytes_are_refused():
    with pytest.raises(UnsupportedImage, match="empty"):
        decode_image(b"", **LIMITS)


def test_a_truncated_jpeg_is_refused():
    data = _encode(_photo(), "JPEG", quality=90)
    with pytest.raises(UnsupportedImage, match="damaged or truncated"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_a_corrupt_png_is_refused():
    data = bytearray(_encode(_photo(300, 200), "PNG"))
    data[200:400] = b"\xff" * 200  # inside the compressed data: checksum and inflate fail
    with pytest.raises(UnsupportedImage):
        decode_image(bytes(data), **LIMITS)


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _png_header_only(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, **LIMITS)


def test_too_many_bytes_are_refused_before_decoding():
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(b"\xff\xd8" + b"\0" * 2000, max_bytes=1000, max_pixels=10**6)


def test_extreme_aspect_ratio_is_refused():
    data = _encode(Image.new("RGB", (2000, 40), "white"), "PNG")
    with pytest.raises(UnsupportedImage, match="narrow"):
        decode_image(data, **LIMITS)


def test_a_tiny_image_is_refused():
    with pytest.raises(UnsupportedImage, match="only"):
        decode_image(_encode(Image.new("RGB", (4, 4)), "PNG"), **LIMITS)


def test_a_format_outside_the_list_is_refused():
    data = _encode(_photo(100, 100), "TIFF")
    with pytest.raises(UnsupportedImage, match="format"):
        decode_image(data, **LIMITS)


# ------------------------------------------------------------------ decode cost (issue 24, item 7)

PHONE_LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": Settings().max_image_pixels}


def _phone_jpeg(width: int = 8000, height: int = 6000) -> bytes:
    """A 48 MP phone photo as a file: a noisy colour gradient at quality 90 (~10 MB, like a real one)."""
    rng = np.random.default_rng(48)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    planes = [120 + 80 * x + 20 * y, 90 + 100 * y, 160 - 60 * x * y]
    # Noise drawn as float32 straight into one buffer, plane by plane, with no float64 planes to stack:
    # the same picture and file size for much less CPU (the module's slowest setup otherwise).
    pixels = np.empty((height, width, 3), np.uint8)
    noise = np.empty((height, width), np.float32)
    for index, plane in enumerate(planes):
        rng.standard_normal(out=noise, dtype=np.float32)
        noise *= 6
        noise += plane
        pixels[..., index] = np.clip(noise, 0, 255, out=noise)
    return _encode(Image.fromarray(pixels), "JPEG", quality=90)


@pytest.fixture(scope="module")
def phone_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("phone") / "IMG_0001.jpg"
    path.write_bytes(_phone_jpeg())
    return path


def _rgba_png(width: int, height: int) -> bytes:
    """An RGBA PNG of any size written row by row (never width×height in memory): a translucent
    gradient whose invisible pixels are black, as a sticker's cut-out often is. 6300×6300 is ~150 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    xs = np.arange(width)
    compressor = zlib.compressobj(9)
    body = []
    for y in range(height):
        row = np.zeros((width, 4), np.uint8)
        visible = xs < width // 2
        row[visible] = (255, (y * 255) // height, 64, 255)
        row[~visible, 3] = 0
        body.append(compressor.compress(b"\0" + row.tobytes()))
    body.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")
    )


# The peak is the process's VmHWM (its resident high-water mark, in KiB), not getrusage's ru_maxrss:
# Linux carries a parent's high-water mark into ru_maxrss across fork and exec, so a child of this
# pytest process (hundreds of MB with TensorFlow loaded) would show the parent's peak, never its own.
_DECODE_IN_A_CHILD = """
import json, sys
from inference.decode import decode_image
from inference.errors import InferenceError

def high_water_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

data = open(sys.argv[1], "rb").read()
limits = json.loads(sys.argv[2])
before = high_water_kib()
try:
    image = decode_image(data, **limits)
    answer = {"size": list(image.size), "mode": image.mode}
except InferenceError as error:
    answer = {"error": type(error).__name__, "reason": error.reason}
answer["peak_mb"] = (high_water_kib() - before) / 1024
print(json.dumps(answer))
"""


def _decode_in_a_child(path: Path, **limits) -> dict:
    """decode_image in a fresh process: how far its peak memory rose above what the imports took."""
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_A_CHILD, str(path), json.dumps(limits)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_48_megapixel_phone_jpeg_is_decoded_at_an_eighth_within_little_memory(phone_jpeg):
    """Refused before ("the limit is 40,000,000"). At 1/8 it is 1000×750; libjpeg never holds the full
    image, so the rise in peak memory stays far below even one full-size RGB copy (8000×6000×3 =
    144 MB): 60 MB leaves room for the 10 MB file, libjpeg's row buffers and allocator slack."""
    assert len(phone_jpeg.read_bytes()) < PHONE_LIMITS["max_bytes"]
    answer = _decode_in_a_child(phone_jpeg, target_size=240, **PHONE_LIMITS)
    assert answer["size"] == [1000, 750] and answer["mode"] == "RGB"
    assert answer["peak_mb"] < 60, answer
    gray = decode_image(phone_jpeg.read_bytes(), target_size=240, grayscale=True, **PHONE_LIMITS)
    assert gray.mode == "L" and gray.size == (1000, 750)


def test_a_big_jpeg_with_no_target_is_still_decoded_within_the_full_size_cap(phone_jpeg):
    image = decode_image(phone_jpeg.read_bytes(), **PHONE_LIMITS)
    assert image.size == (4000, 3000)  # 1/2: the first scale under 16 MP
    assert image.size[0] * image.size[1] <= MAX_FULL_PIXELS


def test_a_small_rgba_png_of_40_megapixels_is_refused_from_its_header_with_the_next_step(tmp_path):
    """The finding: 154 KB, 6300×6300 RGBA, ~570 MB and 1.3 s to decode. PNG has no reduced-size
    decoding, so above 16 MP it is refused before any pixel is decoded: the peak barely moves."""
    path = tmp_path / "sticker.png"
    path.write_bytes(_rgba_png(6300, 6300))
    assert path.stat().st_size < 400_000
    answer = _decode_in_a_child(path, target_size=256, **PHONE_LIMITS)
    assert answer["error"] == "ImageTooLarge" and answer["reason"] == "pixels_full"
    assert answer["peak_mb"] < 20, answer
    with pytest.raises(ImageTooLarge) as refused:
        decode_image(path.read_bytes(), target_size=256, **PHONE_LIMITS)
    assert refused.value.values["width"] == 6300 and refused.value.values["limit"] == 16


def test_a_transparent_png_is_shrunk_before_its_transparency_is_laid_on_white(tmp_path):
    """4000×4000 RGBA (16 MP, the most a PNG may have): decoding it must hold the 64 MB of RGBA once
    (plus its premultiplied copy while shrinking), not the four full-size copies the composite made
    (RGBA copy, white background, composite, RGB: ~250 MB more). 160 MB = two full-size RGBA images
    and 32 MB of slack for zlib and the allocator."""
    path = tmp_path / "big.png"
    path.write_bytes(_rgba_png(4000, 4000))
    answer = _decode_in_a_child(path, target_size=256, **PHONE_LIMITS)
    assert answer["size"] == [267, 267] and answer["mode"] == "RGB", answer  # 4000 / 15, rounded up
    assert answer["peak_mb"] < 160, answer
    image = np.asarray(decode_image(path.read_bytes(), target_size=256, **PHONE_LIMITS), np.int16)
    # Left half: the visible colour; right half: white paper, not the black of the invisible pixels.
    assert np.abs(image[:, :120, 0] - 255).max() <= 1 and np.abs(image[:, :120, 2] - 64).max() <= 1
    assert image[:, 140:].min() >= 254
    # The seam is a blend of the colour and white, never darker than either (no black halo).
    assert image[:, 130:136, 1].min() >= image[:, :120, 1].min() - 1


def test_a_small_transparent_png_keeps_its_size():
    image = Image.new("LA", (300, 200), (0, 0))
    image.paste((0, 255), (0, 0, 150, 200))
    decoded = decode_image(_encode(image, "PNG"), target_size=240, **LIMITS)
    assert decoded.size == (300, 200)
    pixels = np.asarray(decoded)
    assert pixels[:, :150].max() == 0 and pixels[:, 150:].min() == 255


@pytest.mark.parametrize(
    ("data", "limits", "error", "reason"),
    [
        (b"", LIMITS, UnsupportedImage, "empty"),
        (b"\xff\xd8" + b"\0" * 2000, {"max_bytes": 1000, "max_pixels": 10**6}, ImageTooLarge, "file_bytes"),
        (b"%PDF-1.4 not a photo\n" * 20, LIMITS, UnsupportedImage, "not_image"),
        (_png_header_only(50_000, 50_000), LIMITS, ImageTooLarge, "pixels_declared"),
        (_png_header_only(3000, 3000), LIMITS, ImageTooLarge, "pixels_full"),
        (_encode(_photo(3000, 2000), "JPEG"), LIMITS, ImageTooLarge, "pixels_jpeg"),
        (_encode(Image.new("RGB", (4, 4)), "PNG"), LIMITS, UnsupportedImage, "too_small"),
        (_encode(Image.new("RGB", (2000, 40)), "PNG"), LIMITS, UnsupportedImage, "too_narrow"),
        (_encode(_photo(), "JPEG")[:5000], LIMITS, UnsupportedImage, "damaged"),
    ],
)
def test_every_refusal_names_a_reason_the_bot_words_in_both_languages_with_a_next_step(
    data, limits, error, reason
):
    with pytest.raises(error) as refused:
        decode_image(data, **limits)
    assert refused.value.reason == reason
    english, russian = (reply_for(refused.value, language) for language in ("en", "ru"))
    assert english != russian
    assert any(
        step in english.lower() for step in ("send it as a photo instead of a file", "send a larger", "again")
    )
    assert any(step in russian for step in ("как фото, а не файлом", "побольше", "ещё раз", "снова"))
    assert not any(ascii_word in russian for ascii_word in (" the ", " is ", " image"))  # no English inside
    if isinstance(refused.value, ImageTooLarge) and reason != "file_bytes":
        assert "megapixels" in english and "мегапикселей" in russian  # the size to crop or resize to


def test_a_refusal_keeps_its_reason_through_a_decode_process():
    """The pool pickles the error back: the reason and its values must survive."""
    refused = ImageTooLarge("the JPEG is too big", reason="pixels_jpeg", width=1, height=2, limit=3.0)
    copy = pickle.loads(pickle.dumps(refused))
    assert (copy.reason, copy.values, str(copy)) == ("pixels_jpeg", refused.values, "the JPEG is too big")


_BOMB_UNDER_A_MEMORY_LIMIT = """
import json, sys
from inference.decode import decode_image, limit_memory
from inference.errors import InferenceError
data = open(sys.argv[1], "rb").read()
limit_memory(64 * 1024 * 1024)
try:
    image = decode_image(data, max_bytes=1 << 30, max_pixels=1 << 40, max_full_pixels=1 << 40)
    print(json.dumps({"size": list(image.size)}))
except InferenceError as error:
    print(json.dumps({"error": type(error).__name__, "reason": error.reason}))
"""


def test_a_decode_process_with_a_memory_limit_fails_one_photo_not_the_machine(tmp_path):
    """With every pixel cap lifted, a 6300×6300 RGBA PNG needs ~160 MB for its pixels alone: under a
    64 MB budget it must fail with ImageTooLarge("memory"), and the process must live to say so."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_rgba_png(6300, 6300))
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_UNDER_A_MEMORY_LIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"error": "ImageTooLarge", "reason": "memory"}
