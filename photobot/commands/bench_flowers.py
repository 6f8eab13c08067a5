"""`photobot bench flowers`: feature extraction throughput (batch 32) and single-photo latency."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: flower_photos/daisy)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches of 32 (default 6)")
    parser.add_argument("--singles", type=int, default=30, help="timed single photos (default 30)")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks.flowers import bench, photo_files
    from training.flower_data import find_flower_photos

    folder = args.photos or find_flower_photos(settings.datasets, settings.data_dir) / "daisy"
    photos = photo_files(folder)
    if len(photos) < 64:
        raise UserFacingError(f"{folder} has {len(photos)} photos; 64 are needed")
    print(json.dumps(bench(photos, args.batches, args.singles)))
    return 0
