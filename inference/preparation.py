"""Preparing a photo for the models: decode once, route (auto mode), build each model's input.

`prepare_photo` is a plain function of plain values, so it runs in a decode process (or a pool thread)
alike; the adapters turn a photo into a model's input rows and the model's outputs into an answer, one
per preprocessing id (a version's meta.json names its own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from inference import digits, flowers, router
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, ModelKind
from inference.decode import decode_image
from inference.engine import Outputs
from inference.errors import ModelUnavailable
from inference.lite import run_in_this_process
from inference.loading import LoadedModel
from inference.model_store import ModelVersion
from inference.prediction import Prediction

log = logging.getLogger(__name__)


class Adapter(Protocol):
    """Photo → model input, and model output → Prediction, for one preprocessing id."""

    kind: ModelKind  # what this preprocessing is for: routing and grayscale decoding follow it
    decode_size: int  # the shorter side decoding must keep
    row_values: int  # numbers in one model input row (28·28 for a digit crop)

    def prepare(self, image: Image.Image) -> tuple[np.ndarray | None, str | None]: ...

    def answer(self, outputs: Outputs, version: ModelVersion) -> Prediction: ...

    def nothing(self, version: ModelVersion, reason: str | None) -> Prediction: ...


class DigitsAdapter:
    kind = ModelKind.DIGIT_READER
    decode_size = digits.DECODE_SIZE
    row_values = 28 * 28

    def prepare(self, image: Image.Image) -> tuple[np.ndarray | None, str | None]:
        found = digits.read_digits(image)
        return (found.model_input(), None) if found.found else (None, found.reason)

    def answer(self, outputs: Outputs, version: ModelVersion) -> Prediction:
        probs = outputs[0] if isinstance(outputs, list | tuple) else outputs
        return digits.digits_prediction(probs, version.labels or digits.LABELS, version.version)

    def nothing(self, version: ModelVersion, reason: str | None) -> Prediction:
        return digits.digits_prediction(np.zeros((0, 10)), digits.LABELS, version.version, reason=reason)


class FlowersAdapter:
    kind = ModelKind.IMAGE_CLASSIFIER
    decode_size = flowers.RESIZE_SHORTER
    row_values = flowers.CROP * flowers.CROP * 3

    def prepare(self, image: Image.Image) -> tuple[np.ndarray | None, str | None]:
        return flowers.flower_input(image)[np.newaxis], None

    def answer(self, outputs: Outputs, version: ModelVersion) -> Prediction:
        prediction = flowers.flowers_prediction(outputs, version)
        listed = _output_list(outputs)
        classes = ((version.meta.get("ood") or {}).get("imagenet") or {}).get("flower_classes")
        if len(listed) < 3 or classes is None:
            return prediction
        return replace(prediction, evidence=router.page_evidence(listed[2], classes))

    def nothing(self, version: ModelVersion, reason: str | None) -> Prediction:
        raise AssertionError("every photo has a flower input")


def _output_list(outputs: Outputs) -> list[np.ndarray]:
    """A model's outputs in their order (probabilities, distances, imagenet), however they came."""
    if isinstance(outputs, Mapping):
        return [outputs[name] for name in ("probabilities", "distances", "imagenet") if name in outputs]
    if isinstance(outputs, list | tuple):
        return list(outputs)
    return [outputs]


ADAPTERS: dict[str, Adapter] = {
    digits.PREPROCESSING_ID: DigitsAdapter(),
    flowers.PREPROCESSING_ID: FlowersAdapter(),
}


def adapter_for(version: ModelVersion, catalogue: Catalogue = DEFAULT_CATALOGUE) -> Adapter:
    """The adapter named by meta["preprocessing"]; refuses a version this code cannot feed."""
    preprocessing = preprocessing_id(version, catalogue)
    adapter = ADAPTERS.get(preprocessing)
    if adapter is None:
        raise ModelUnavailable(
            f"{version.name} v{version.version} needs preprocessing {preprocessing!r}, which this "
            f"version of PhotoBot does not have ({', '.join(ADAPTERS)})"
        )
    return adapter


@dataclass(frozen=True)
class WorkerModel:
    """What a decode process needs to run a LiteRT model itself (plain values: they are pickled)."""

    file: str  # the cached conversion
    outputs: int
    row_shape: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """One photo, prepared: per model name its inputs (or why there are none), and the route taken."""

    items: dict[str, tuple[np.ndarray | None, str | None]]
    route: router.Route | None
    scene: router.Scene | None
    decode_ms: float
    preprocess_ms: float
    outputs: dict[str, Outputs] = field(default_factory=dict)  # models the decode process ran itself
    model_ms: float = 0.0


def preprocessing_id(version: ModelVersion, catalogue: Catalogue = DEFAULT_CATALOGUE) -> str:
    """What prepares photos for `version`: its meta.json says, else its catalogue entry."""
    spec = catalogue.get(version.name)
    return version.meta.get("preprocessing") or (spec.preprocessing if spec else "")


def prepare_photo(
    source: bytes | Path,
    target: str | None,
    preprocessing: dict[str, str],
    *,
    max_bytes: int,
    max_pixels: int,
    run_here: Mapping[str, WorkerModel] | None = None,
) -> Plan:
    """Decode once, route (auto mode), build each needed model's inputs, and run the models in
    `run_here` on theirs (a decode process; see IN_DECODE_WORKERS).

    A plain function of plain values, so it runs in a pool thread or a pool process alike.
    `target` names the one model a chat mode asks for, or is None for auto mode; `preprocessing` maps
    each available model name to its version's preprocessing id. `source` is the photo's bytes or its
    file (see `read_photo`).
    """
    started = time.monotonic()
    adapters = {name: ADAPTERS[pid] for name, pid in preprocessing.items()}
    image = decode_image(
        read_photo(source, max_bytes),
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        target_size=max(a.decode_size for a in adapters.values()),
        grayscale=target is not None and adapters[target].kind == ModelKind.DIGIT_READER,
    )
    decoded = time.monotonic()
    items: dict[str, tuple[np.ndarray | None, str | None]] = {}
    route: router.Route | None = None
    scene: router.Scene | None = None
    if target is not None:
        items[target] = adapters[target].prepare(image)
        crops = items[target][0]
        if adapters[target].kind == ModelKind.DIGIT_READER and crops is not None:
            scene = router.look(image, digits_found=True, crops=crops)  # to doubt a reading off paper
    else:
        reader, seer = auto_pair(adapters)
        if reader is not None:
            items[reader] = adapters[reader].prepare(image)
        crops = items[reader][0] if reader is not None else None
        scene = router.look(image, digits_found=crops is not None, crops=crops)
        route = router.route(scene) if seer is not None else "digit"
        if reader is None:
            route = "flower"
        if route != "digit" and seer is not None:
            items[seer] = adapters[seer].prepare(image)
        if route == "flower" and reader is not None:
            items.pop(reader, None)
    done = time.monotonic()
    outputs = run_here_in_process(items, run_here or {})
    return Plan(
        items,
        route,
        scene,
        (decoded - started) * 1000.0,
        (done - decoded) * 1000.0,
        outputs,
        (time.monotonic() - done) * 1000.0,
    )


def auto_pair(adapters: Mapping[str, Adapter]) -> tuple[str | None, str | None]:
    """The models auto mode weighs against each other: the digit reader and the image classifier."""
    reader = next((name for name, a in adapters.items() if a.kind == ModelKind.DIGIT_READER), None)
    seer = next((name for name, a in adapters.items() if a.kind == ModelKind.IMAGE_CLASSIFIER), None)
    return reader, seer


def read_photo(source: bytes | Path, max_bytes: int) -> bytes:
    """The photo's bytes; a file is read here, in the decode process. The bot hands over a file, so a
    20 MB document never crosses the pipe: pickled on the event loop, that stalled it ~94 ms. At most
    `max_bytes` + 1 bytes are read: decode_image refuses anything over the limit."""
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read(max_bytes + 1)


def run_here_in_process(
    items: Mapping[str, tuple[np.ndarray | None, str | None]], models: Mapping[str, WorkerModel]
) -> dict[str, Outputs]:
    """Outputs of the models this process can run itself; any it cannot are left to the engine."""
    outputs: dict[str, Outputs] = {}
    for name, model in models.items():
        inputs = items.get(name, (None, None))[0]
        if inputs is None:
            continue
        try:
            outputs[name] = run_in_this_process(model.file, model.outputs, fit_rows(inputs, model.row_shape))
        except Exception as error:  # a conversion file gone or damaged since it was checked
            log.warning("%s: left to the engine, the decode process cannot run it: %r", name, error)
    return outputs


def fit_rows(inputs: np.ndarray, row_shape: tuple[int, ...]) -> np.ndarray:
    """`inputs` with rows of the model's shape when only the layout differs (an MLP takes flat rows)."""
    if inputs.shape[1:] != row_shape and int(np.prod(inputs.shape[1:])) == int(np.prod(row_shape)):
        return inputs.reshape(len(inputs), *row_shape)
    return inputs


def check_fits(loaded: LoadedModel, adapter: Adapter) -> None:
    """Refuse a model whose input rows are not what its preprocessing produces."""
    values = int(np.prod(loaded.row_shape))
    if values != adapter.row_values:
        raise ModelUnavailable(
            f"{loaded.name} v{loaded.version.version} takes rows of shape {loaded.row_shape}, but its "
            f"preprocessing makes {adapter.row_values} values per row"
        )
