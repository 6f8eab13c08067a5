"""Fuzzing the decoder: mutated real images either decode to a plain image or raise our own errors.

A few thousand inputs (seeded, so a failure reproduces) made from small real JPEG, PNG, GIF and WebP
files by bit flips, byte overwrites, truncations, and splices of one file's header onto another's
body. Each must decode to an RGB or L image within the pixel caps, or raise UnsupportedImage /
ImageTooLarge: never another exception. The whole run happens in a child process, so a crash in a
native decoder (a segfault) fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

FUZZ_CHILD = r"""
import io, json, sys
import numpy as np
from PIL import Image
from inference.decode import decode_image
from inference.errors import ImageTooLarge, UnsupportedImage

CASES, SEED = int(sys.argv[1]), int(sys.argv[2])
LIMITS = {"max_bytes": 1 << 20, "max_pixels": 4_000_000, "max_full_pixels": 1_000_000}
rng = np.random.default_rng(SEED)


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


ys, xs = np.mgrid[0:48, 0:64]
picture = Image.fromarray(np.stack([xs * 4, ys * 5, (xs + ys) * 2], -1).astype(np.uint8))
rgba = picture.convert("RGBA")
rgba.putalpha(Image.fromarray((xs * 4).astype(np.uint8)))
frames = [picture.convert("P"), picture.rotate(90).convert("P")]
gif = io.BytesIO()
frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
seeds = [
    encode(picture, "JPEG", quality=85),
    encode(picture, "JPEG", quality=85, progressive=True),
    encode(picture.convert("L"), "JPEG", quality=85),
    encode(picture, "PNG"),
    encode(rgba, "PNG"),
    encode(picture.convert("P"), "PNG"),
    gif.getvalue(),
    encode(picture, "WEBP", quality=80),
    encode(rgba, "WEBP", lossless=True),
    encode(picture, "BMP"),
]


def mutate(data):
    data = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:  # flip a few bits
        for _ in range(rng.integers(1, 9)):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # overwrite a run with random bytes (often a size or a length field)
        start = int(rng.integers(len(data)))
        data[start : start + int(rng.integers(1, 9))] = rng.bytes(int(rng.integers(1, 9)))
    elif kind == 2:  # cut it short
        del data[int(rng.integers(1, len(data))) :]
    elif kind == 3:  # one file's header on another's body
        other = seeds[rng.integers(len(seeds))]
        cut = int(rng.integers(8, 120))
        data = data[:cut] + bytearray(other[cut:])
    else:  # extreme values where sizes usually sit
        start = int(rng.integers(min(len(data), 40)))
        data[start : start + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(data)


outcomes = {"decoded": 0, "UnsupportedImage": 0, "ImageTooLarge": 0}
for case in range(CASES):
    data = mutate(seeds[case % len(seeds)])
    try:
        image = decode_image(data, target_size=int(rng.choice([0, 240])) or None, **LIMITS)
    except (UnsupportedImage, ImageTooLarge) as error:
        assert error.reason, f"case {case}: {type(error).__name__} without a reason: {error}"
        outcomes[type(error).__name__] += 1
        continue
    except Exception as error:
        print(json.dumps({"case": case, "error": repr(error)[:300], "data": data.hex()[:400]}))
        sys.exit(3)
    pixels = np.asarray(image)
    assert image.mode in ("RGB", "L"), (case, image.mode)
    assert pixels.shape[:2] == image.size[::-1] and pixels.ndim == (3 if image.mode == "RGB" else 2)
    assert pixels.shape[-1] == 3 or image.mode == "L"
    assert image.size[0] * image.size[1] <= LIMITS["max_full_pixels"], (case, image.size)
    outcomes["decoded"] += 1
print(json.dumps(outcomes))
"""


def test_mutated_images_decode_or_raise_our_own_errors():
    done = subprocess.run(
        [sys.executable, "-c", FUZZ_CHILD, "3000", "24"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout[-1500:]} {done.stderr[-3000:]}"
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == 3000
    # The mutations reach both sides: many still decode, many are refused (else the fuzzing is idle).
    assert outcomes["decoded"] > 300 and outcomes["UnsupportedImage"] > 300, outcomes
