"""The ImageNet classes photos of handwritten digits on paper are taken for (`inference.router`'s
`PAGE_CLASSES`): the top class of at least `--min-photos` phone-photo renders of MNIST *training* digits,
as the shipped flower model's ImageNet head sees them through the serving crop.

    python -m training.synth_photos --out R --n 400 --split train --size 640x480 --seed 11 --datasets D
    python -m training.page_classes --renders R

Prints the classes as a Python tuple, for `inference/router.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.new_labels import learned_classes

MIN_PHOTOS = 2


def imagenet_of(photos: list[Path], batch: int = 32) -> np.ndarray:
    """(N, 1000) the ImageNet probabilities the served flower model outputs for `photos` (the installed
    package's backbone and ImageNet head), cropped as served."""
    from inference.decode import decode_image
    from inference.flowers import RESIZE_SHORTER, flower_input
    from training.effnet_lite0 import build_backbone, imagenet_head
    from training.imagenet_evidence import imagenet_probabilities

    backbone = build_backbone()
    rows = [
        flower_input(
            decode_image(p.read_bytes(), max_bytes=1 << 26, max_pixels=1 << 26, target_size=RESIZE_SHORTER)
        )
        for p in photos
    ]
    features = [
        np.asarray(backbone.predict_on_batch(np.stack(rows[i : i + batch]).astype(np.float32)))
        for i in range(0, len(rows), batch)
    ]
    return imagenet_probabilities(np.concatenate(features), *imagenet_head())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True, help="digit photos: DIR/<digit>/*.jpg")
    parser.add_argument("--min-photos", type=int, default=MIN_PHOTOS)
    args = parser.parse_args()
    photos = sorted(args.renders.glob("*/*.jpg"))
    classes = learned_classes(imagenet_of(photos), args.min_photos)
    print(f"# {len(classes)} classes from {len(photos)} photos")
    print(f"PAGE_CLASSES = {tuple(classes)}")


if __name__ == "__main__":
    main()
