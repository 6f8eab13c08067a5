"""Is a crop the digit reader cut out a handwritten digit at all? A small CNN's answer, in NumPy.

`read_digits` finds pen-stroke-like marks, and on a plain-backgrounded photo of something else (a face,
the moon, a rocket against the sky, a leaf on a wall) it cuts out marks that are not digits; the digit
model, which knows only ten classes, then reads them confidently as "1" or "8". This test looks at the
crops themselves: strokes of even width that make a digit's shape, against blobs, specks, filled
shapes and textures. It was trained (`training.digitness`) on the crops `read_digits` makes of
phone-photo renders of MNIST training digits and of MNIST training digits thickened, thinned and
slanted, against the crops it makes of photos that show no digit (flower photos of the training split,
the development halves of the package and ImageNet photos).

The network is tiny (conv 5×5×8 → pool → conv 3×3×16 → pool → dense 32 → 1, ~14 k weights shipped
as float16 in `shipped/digitness.npz`) and runs in NumPy beside the reader: well under a millisecond
for a few crops, and nothing to convert or serve.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).parent / "shipped" / "digitness.npz"
LAYERS = ("conv1", "conv2", "dense1", "dense2")


@functools.lru_cache(maxsize=1)
def _weights(path: Path = WEIGHTS) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: np.asarray(data[name], dtype=np.float32) for name in data.files}


def digitness(crops: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(k,) probability that each (28, 28) crop in [0, 1] (light ink on black) is a handwritten digit."""
    w = _weights() if weights is None else weights
    x = np.asarray(crops, dtype=np.float32).reshape(-1, 28, 28, 1)
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    x = _pool(_relu(_conv(x, w["conv1_kernel"], w["conv1_bias"])))
    x = _pool(_relu(_conv(x, w["conv2_kernel"], w["conv2_bias"])))
    x = _relu(x.reshape(len(x), -1) @ w["dense1_kernel"] + w["dense1_bias"])
    logits = (x @ w["dense2_kernel"] + w["dense2_bias"]).reshape(-1)
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float32)


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'valid' convolution as Keras' Conv2D computes it: (n, h, w, c) with kernel (kh, kw, c, f)."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (n, h', w', c, kh, kw)
    return np.asarray(np.einsum("nhwcij,ijcf->nhwf", windows, kernel, optimize=True) + bias)


def _pool(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return np.asarray(x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4)))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum(x, 0.0))
