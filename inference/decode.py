"""Bytes → a Pillow image, safely, fast, and at a bounded cost.

Everything a stranger sends is checked before it costs memory: the byte count, the format (from the
file's own header, not its name), the pixel count (decompression bombs declare huge sizes in a few
bytes) and the aspect ratio. EXIF orientation is applied, so a phone photo taken sideways comes out
upright.

What a decode may cost is bounded by what is decoded at full size, not by what the file declares:

- JPEGs are decoded at a reduced scale with `Image.draft` (libjpeg scales by 1/2, 1/4 or 1/8 while it
  decodes): far enough for the caller's `target_size` (a 1280×960 photo for a 240 px reader decodes
  at 1/4 in a fraction of the time), and always far enough to fit `max_full_pixels`. So a 48 MP phone
  photo sent as a file (8000×6000) is read at 1/8, ~750 KB of pixels, and JPEGs may declare up to
  `max_pixels`.
- PNG, WebP, GIF and BMP have no reduced-size decoding: they are refused above `max_full_pixels`
  (16 MP by default, 64 MB as RGBA). A 154 KB RGBA PNG of 6300×6300 cost ~570 MB before.
- Transparency is laid on white after shrinking to the size the caller needs, not at full size (the
  composite made three more full-size copies).
- A decode process may also be given an address-space limit (`limit_memory`, its initializer), so a
  bomb that slips past all this fails its own photo with ImageTooLarge, not the machine.

Every refusal carries a `reason` key (see `inference.errors`): the bot words it in the user's language,
with the next step (send it as a photo instead of a file, crop or resize it).
"""

from __future__ import annotations

import io
import logging
import math
import resource
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from inference.errors import ImageTooLarge, UnsupportedImage

logger = logging.getLogger(__name__)

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_ASPECT_RATIO = 20.0  # a 20:1 strip is already not a photo of anything we read
MIN_SIDE = 8  # pixels; smaller images hold no readable digit or flower
# The most pixels decoded at full size: every format but JPEG, and a JPEG after its reduced decoding.
# 16 MP holds a 4000×4000 PNG, an A4 page scanned at 400 dpi, any phone screenshot; as RGBA it is 64 MB.
MAX_FULL_PIXELS = 16_000_000
JPEG_SCALES = (1, 2, 4, 8)  # what libjpeg's DCT scaling (`Image.draft`) offers


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    target_size: int | None = None,
    grayscale: bool = False,
    max_full_pixels: int = MAX_FULL_PIXELS,
) -> Image.Image:
    """Decode `data` into an RGB or L image, upright per EXIF; first frame of an animation.

    `target_size` is the shorter side the caller needs: JPEGs much larger than that are decoded at a
    reduced scale (never below `target_size`), and transparent images are shrunk towards it before
    their transparency is laid on white. `grayscale=True` returns L and lets libjpeg skip the colour
    planes (the digit reader needs only brightness).

    Raises ImageTooLarge when `data` has more than `max_bytes` bytes, when a JPEG declares more than
    `max_pixels` pixels or cannot be decoded within `max_full_pixels` even at 1/8, when another format
    has more than `max_full_pixels` (or `max_pixels`) pixels, or when decoding runs out of memory;
    UnsupportedImage when it is not a readable image of an accepted format or has an extreme shape.
    Nothing else: whatever a damaged file makes Pillow raise becomes UnsupportedImage.
    """
    if not data:
        raise UnsupportedImage("the file is empty", reason="empty")
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"the file has {len(data):,} bytes; the limit is {max_bytes:,}",
            reason="file_bytes",
            megabytes=len(data) / 1e6,
            limit=max_bytes / 1e6,
        )
    try:
        return _decode(data, max_pixels, min(max_pixels, max_full_pixels), target_size, grayscale)
    except (ImageTooLarge, UnsupportedImage):
        raise
    except MemoryError as error:
        raise _out_of_memory(max_full_pixels) from error
    except Exception as error:  # a hostile file makes Pillow's parsers raise almost anything
        if "out of memory" in str(error):  # libjpeg/zlib running out, reported by Pillow as OSError
            raise _out_of_memory(max_full_pixels) from error
        raise UnsupportedImage(
            f"the image is damaged or truncated ({type(error).__name__}: {error})", reason="damaged"
        ) from error


def _decode(
    data: bytes, max_pixels: int, max_full_pixels: int, target_size: int | None, grayscale: bool
) -> Image.Image:
    image = _open(data, max_full_pixels)
    _check_shape(image)
    if image.format == "JPEG":
        _draft_jpeg(image, max_pixels, max_full_pixels, target_size, grayscale)
    else:
        _check_full_size(image, max_full_pixels, max_pixels)
    image.load()
    if image.mode not in ("RGB", "L"):
        image = _shrink(_without_palette(image), target_size)
    image = ImageOps.exif_transpose(image)
    image = _plain_mode(image)
    return image.convert("L") if grayscale and image.mode != "L" else image


def _open(data: bytes, max_full_pixels: int) -> Image.Image:
    """Read the header only; Pillow's own bomb check is replaced by ours (with the caller's limit),
    except for sizes so absurd (twice Pillow's limit) that Pillow refuses them itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as error:
        raise UnsupportedImage(
            "this is not an image in a format we read (JPEG, PNG, WebP, GIF, BMP)", reason="not_image"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(
            f"the image declares too many pixels ({error})",
            reason="pixels_declared",
            limit=max_full_pixels / 1e6,
        ) from error
    if getattr(image, "is_animated", False):
        image.seek(0)  # animated GIF/WebP/PNG: the first frame (is_animated, unlike n_frames, reads 2)
    return image


def _check_shape(image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise UnsupportedImage(
            f"the image is only {width}×{height} pixels", reason="too_small", width=width, height=height
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise UnsupportedImage(
            f"the image is {width}×{height}: too long and narrow to be a photo",
            reason="too_narrow",
            width=width,
            height=height,
        )


def _draft_jpeg(
    image: Image.Image, max_pixels: int, max_full_pixels: int, target_size: int | None, grayscale: bool
) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale: as far as `target_size` allows (the shorter side
    stays ≥ it), and at least as far as `max_full_pixels` needs. Refuses what cannot fit either way."""
    width, height = image.size
    pixels = width * height
    needed = next((s for s in JPEG_SCALES if pixels / (s * s) <= max_full_pixels), None)
    if pixels > max_pixels or needed is None:
        limit = max_pixels if needed is not None else min(max_pixels, max_full_pixels * 64)
        raise ImageTooLarge(
            f"the JPEG is {width}×{height} = {pixels:,} pixels; the limit is {limit:,}",
            reason="pixels_jpeg",
            width=width,
            height=height,
            megapixels=pixels / 1e6,
            limit=limit / 1e6,
        )
    mode = "L" if grayscale or image.mode == "L" else "RGB"
    wanted = max(1.0, min(width, height) / target_size) if target_size else 1.0
    # Pillow picks the largest scale at which the image still covers the size asked for.
    image.draft(
        mode,
        (
            max(1, min(round(width / wanted), width // needed)),
            max(1, min(round(height / wanted), height // needed)),
        ),
    )
    if image.size[0] * image.size[1] > max_full_pixels:  # Pillow chose less than asked: never decode it
        raise ImageTooLarge(
            f"the JPEG would decode at {image.size[0]}×{image.size[1]}; the limit is {max_full_pixels:,}",
            reason="pixels_jpeg",
            width=width,
            height=height,
            megapixels=pixels / 1e6,
            limit=max_full_pixels / 1e6,
        )


def _check_full_size(image: Image.Image, max_full_pixels: int, max_pixels: int) -> None:
    """Formats without reduced-size decoding cost their whole size: refuse them above the lower cap."""
    width, height = image.size
    if width * height > max_full_pixels:
        raise ImageTooLarge(
            f"the {image.format} is {width}×{height} = {width * height:,} pixels; the limit for formats "
            f"decoded at full size is {max_full_pixels:,}",
            reason="pixels_full",
            format=image.format,
            width=width,
            height=height,
            megapixels=width * height / 1e6,
            limit=max_full_pixels / 1e6,
            jpeg_limit=max_pixels / 1e6,
        )


def _without_palette(image: Image.Image) -> Image.Image:
    """A palette image as RGBA (when it has transparency) or RGB; any other mode as it is."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    return image


def _shrink(image: Image.Image, target_size: int | None) -> Image.Image:
    """Box-shrink by a whole factor while the shorter side stays ≥ `target_size`, before any more
    full-size copies are made. Transparent images shrink premultiplied, so the colour of invisible
    pixels does not bleed into their visible neighbours."""
    factor = min(image.size) // target_size if target_size else 1
    if factor < 2 or image.mode not in ("RGBA", "LA", "RGB", "L", "I", "F"):
        return image
    if image.mode in ("RGBA", "LA"):
        mode, info = image.mode, image.info
        premultiplied = "RGBa" if mode == "RGBA" else "La"
        image = image.convert(premultiplied).reduce(factor).convert(mode)
        image.info = info  # EXIF orientation is still to be applied
        return image
    return image.reduce(factor)


def _plain_mode(image: Image.Image) -> Image.Image:
    """Return RGB or L; transparency is laid on white, as a sticker or a scan would look on paper."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
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
    if not (math.isfinite(low) and math.isfinite(high)):
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _out_of_memory(max_full_pixels: int) -> ImageTooLarge:
    return ImageTooLarge(
        "decoding the image ran out of the memory a decode may use",
        reason="memory",
        limit=max_full_pixels / 1e6,
    )


# ------------------------------------------------------------------------------- the decode processes


def limit_memory(budget_bytes: int) -> None:
    """Cap this process's address space at what it uses now plus `budget_bytes` (RLIMIT_AS).

    For a decode process's initializer: a decompression bomb that gets past the pixel caps then fails
    with MemoryError in that process (its photo answered with ImageTooLarge) instead of taking the
    machine's memory from everyone. Measured from the process's current size, since the libraries it
    has loaded already reserve address space. 0 or less leaves the process unlimited.
    """
    if budget_bytes <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + budget_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft < limit:
        return  # already tighter
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    logger.debug("decode process address space limited to %.0f MB", limit / 1e6)


def _address_space() -> int:
    """This process's virtual size in bytes (Linux: /proc/self/status VmSize), 0 where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
