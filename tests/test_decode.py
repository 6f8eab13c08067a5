"""decode_image: refuses what is not a safe image, decodes JPEGs at reduced size, honours EXIF."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from inference.decode import decode_image
from inference.errors import ImageTooLarge, UnsupportedImage

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
