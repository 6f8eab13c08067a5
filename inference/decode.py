"""Bytes → a Pillow image, safely and fast.

Everything a stranger sends is checked before it costs memory: the byte count, the format (from the
file's own header, not its name), the pixel count (decompression bombs declare huge sizes in a few
bytes) and the aspect ratio. JPEGs are decoded at a reduced scale with `Image.draft` when the caller
needs far fewer pixels than the photo has: a 1280×960 photo for a 240 px reader decodes at 1/4 in a
fraction of the time. EXIF orientation is applied, so a phone photo taken sideways comes out upright.
"""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from inference.errors import ImageTooLarge, UnsupportedImage

logger = logging.getLogger(__name__)

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_ASPECT_RATIO = 20.0  # a 20:1 strip is already not a photo of anything we read
MIN_SIDE = 8  # pixels; smaller images hold no readable digit or flower


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    target_size: int | None = None,
    grayscale: bool = False,
) -> Image.Image:
    """Decode `data` into an RGB or L image, upright per EXIF; first frame of an animation.

    `target_size` is the shorter side the caller needs: JPEGs much larger than that are decoded at a
    reduced scale (never below `target_size`). `grayscale=True` returns L and lets libjpeg skip the
    colour planes (the digit reader needs only brightness). Raises ImageTooLarge when `data` has more than
    `max_bytes` bytes or the image more than `max_pixels` pixels, UnsupportedImage when it is not a
    readable image of an accepted format or has an extreme shape.
    """
    if not data:
        raise UnsupportedImage("the file is empty")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the file has {len(data):,} bytes; the limit is {max_bytes:,}")
    image = _open(data)
    _check_geometry(image, max_pixels)
    if target_size is not None and image.format == "JPEG":
        _draft(image, target_size, grayscale)
    elif grayscale and image.format == "JPEG" and image.mode != "L":
        image.draft("L", image.size)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnsupportedImage(f"the image is damaged or truncated ({error})") from error
    image = _plain_mode(image)
    return image.convert("L") if grayscale and image.mode != "L" else image


def _open(data: bytes) -> Image.Image:
    """Read the header only; Pillow's own bomb check is replaced by ours (with the caller's limit)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as error:
        raise UnsupportedImage(
            "this is not an image in a format we read (JPEG, PNG, WebP, GIF, BMP)"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"the image declares too many pixels ({error})") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise UnsupportedImage(f"the image header is damaged ({error})") from error
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated GIF/WebP/PNG: the first frame
    return image


def _check_geometry(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    if min(width, height) < MIN_SIDE:
        raise UnsupportedImage(f"the image is only {width}×{height} pixels")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise UnsupportedImage(f"the image is {width}×{height}: too long and narrow to be a photo")


def _draft(image: Image.Image, target_size: int, grayscale: bool) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the shorter side stays ≥ target_size."""
    width, height = image.size
    mode = "L" if grayscale or image.mode == "L" else "RGB"
    scale = max(1.0, min(width, height) / target_size)
    image.draft(mode, (max(1, round(width / scale)), max(1, round(height / scale))))


def _plain_mode(image: Image.Image) -> Image.Image:
    """Return RGB or L; transparency is laid on white, as a sticker or a scan would look on paper."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("1", "I", "I;16", "F"):
        return image.convert("L") if image.mode == "1" else _to_l(image)
    return image.convert("RGB")


def _to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit or float grayscale image into 0..255 instead of clipping it."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")
