"""Flower model speed on this machine: feature extraction throughput and single-photo latency.

    photobot bench flowers [--photos DIR] [--batches 6] [--singles 30]

Prints one JSON object: photos/s for batches of 32 (the bottleneck cache's extraction, with and
without decoding the JPEGs), and the median / p90 latency of one photo through the whole serving
model (backbone + head + distances). The load average is printed too: the cores are shared.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def _median_ms(samples: list[float]) -> float:
    return round(float(np.median(samples)) * 1000, 1)


def bench(photos: list[Path], batches: int, singles: int) -> dict[str, float]:
    from training.effnet_lite0 import build_backbone
    from training.flower_data import load_pixels
    from training.flower_model import FlowerHead, assemble_flower_model
    from training.ood import fit_ood

    backbone = build_backbone()
    pixels = np.stack([load_pixels(p) for p in photos[:32]]).astype(np.float32)
    backbone.predict_on_batch(pixels)  # warm-up: builds the graph
    batch_s = []
    for _ in range(batches):
        start = time.perf_counter()
        backbone.predict_on_batch(pixels)
        batch_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    decoded = np.stack([load_pixels(p) for p in photos[32:64]]).astype(np.float32)
    backbone.predict_on_batch(decoded)
    with_decoding_s = time.perf_counter() - start

    features = np.asarray(backbone.predict_on_batch(pixels))
    rng = np.random.default_rng(0)
    head = FlowerHead(
        kernel=rng.normal(0, 0.01, (features.shape[1], 5)).astype(np.float32),
        bias=np.zeros(5, np.float32),
        ood=fit_ood(np.concatenate([features] * 2), np.arange(64) % 5, 5, rank=8),
    )
    model = assemble_flower_model(backbone, head)
    one = pixels[:1]
    model.predict_on_batch(one)
    single_s = []
    for _ in range(singles):
        start = time.perf_counter()
        model.predict_on_batch(one)
        single_s.append(time.perf_counter() - start)
    return {
        "batch": 32,
        "extract_photos_per_s": round(32 / float(np.median(batch_s)), 1),
        "extract_with_jpeg_decoding_photos_per_s": round(32 / with_decoding_s, 1),
        "single_photo_ms_median": _median_ms(single_s),
        "single_photo_ms_p90": round(float(np.quantile(single_s, 0.9)) * 1000, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count() or 0,
    }


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
