"""`photobot train flowers`: the flower classifier on the pretrained EfficientNet-Lite0 backbone.

Trains on `flower_photos/` (PHOTOBOT_DATASETS, then $DATA_DIR/datasets; never downloaded) or on any
folder of labelled photos given with `--images DIR` (one sub-folder per class, at least 20 photos each).
Backbone features are cached under $DATA_DIR/cache/bottlenecks, so only new photos cost extraction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from photobot.commands.train import add_promotion_flags, serve_if_better
from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, help="folder of labelled photos, one sub-folder per class")
    parser.add_argument("--validation-percent", type=float, default=10.0, help="default: 10")
    parser.add_argument(
        "--test-percent", type=float, default=10.0, help="held out for the figures; default: 10"
    )
    parser.add_argument(
        "--epochs", type=int, default=300, help="upper bound; early stopping decides (default 300)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the shuffles, the augmentation and the initial weights (0)"
    )
    parser.add_argument(
        "--non-flower-photos",
        type=int,
        default=300,
        help="non-flower photos drawn to calibrate the detector, and as many to measure it (default 300)",
    )
    parser.add_argument(
        "--package-photos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the detector on real photos shipped in installed packages (default: yes)",
    )
    parser.add_argument(
        "--fine-tune",
        action="store_true",
        help="also fine-tune the top of the backbone (blocks 14-15) on augmented photos (slower)",
    )
    parser.add_argument(
        "--fine-tune-variants",
        type=int,
        default=4,
        help="augmented copies of each training photo for --fine-tune (default 4)",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=6,
        help="upper bound for --fine-tune; early stopping on validation loss decides (default 6)",
    )
    parser.add_argument(
        "--fine-tune-from-block",
        type=int,
        choices=(12, 13, 14),  # training.fine_tune.TRAINABLE_FROM, without importing Keras here
        default=14,
        help="the first backbone block --fine-tune retrains (default 14)",
    )
    parser.add_argument(
        "--fine-tune-keep-imagenet",
        action="store_true",
        help="--fine-tune also keeps the pretrained ImageNet head's answers, which the refusal weighs",
    )
    add_promotion_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object at the end")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from photobot.serving import model_store
    from training.datasets import find_mnist
    from training.flower_data import find_flower_photos
    from training.train_flowers import FlowerConfig, train_flowers

    for name in ("validation_percent", "test_percent"):
        value = getattr(args, name)
        if not 0 <= value < 50:
            raise UserFacingError(f"--{name.replace('_', '-')} must be between 0 and 50, got {value}")
    if args.epochs < 1:
        raise UserFacingError(f"--epochs must be positive, got {args.epochs}")
    if args.fine_tune_variants < 0 or args.fine_tune_epochs < 1:
        raise UserFacingError("--fine-tune-variants must be at least 0 and --fine-tune-epochs at least 1")
    if args.non_flower_photos < 6:
        raise UserFacingError(f"--non-flower-photos must be at least 6, got {args.non_flower_photos}")
    config = FlowerConfig(
        validation_percent=args.validation_percent,
        test_percent=args.test_percent,
        epochs=args.epochs,
        seed=args.seed,
        calibration_photos=args.non_flower_photos,
        evaluation_photos=args.non_flower_photos,
        package_photos=args.package_photos,
        fine_tune=args.fine_tune,
        fine_tune_variants=args.fine_tune_variants,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_from_block=args.fine_tune_from_block,
        fine_tune_keep_imagenet=args.fine_tune_keep_imagenet,
    )
    root = args.images if args.images else find_flower_photos(settings.datasets, settings.data_dir)
    if not root.is_dir():
        raise UserFacingError(f"{root} is not a folder")
    store = model_store(settings)
    result = train_flowers(
        root,
        store,
        settings.data_dir / "cache" / "bottlenecks",
        config,
        command=["photobot", *sys.argv[1:]],
        promote=False,  # serve_if_better decides
        progress=lambda message: print(message, flush=True),
        mnist_file=find_mnist(settings.datasets, settings.data_dir),
    )
    version = result.version
    state = serve_if_better(store, "flowers", version, args)
    print(f"flowers v{version.version} in {version.path} ({state})")
    print(
        f"{result.extracted} photos needed feature extraction; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings_s.items())
    )
    if args.json:
        print(json.dumps({"model": "flowers", "version": version.version, **result.metrics}))
    return 0
