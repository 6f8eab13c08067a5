"""What the bot and the Ray Serve application say to each other over HTTP, and their typed configs.

    POST {INFERENCE_URL}/classify?mode=auto   body: the photo's bytes
        200 {"prediction": Prediction.to_json()}
        422 / 503 / 504 / 500 {"error": "UnsupportedImage", "message": …, "reason": …, "values": {…}}
    GET  {INFERENCE_URL}/models
        200 {"models": {name: ModelStatus as JSON}}

An error keeps its class, its `reason` and `values`, so the bot answers a refused photo with the same
words as when the engine runs in its own process. Plain values only: the bot imports this module,
never Ray.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np

from inference.classifier import ModelStatus
from inference.errors import (
    DeadlineExceeded,
    EngineBusy,
    ImageTooLarge,
    InferenceError,
    ModelUnavailable,
    UnsupportedImage,
    WorkerLost,
)
from inference.prediction import Prediction

CLASSIFY_PATH = "/classify"
MODELS_PATH = "/models"
HEALTH_PATH = "/healthz"

# The HTTP status of each error: a photo's own fault (422) is never retried; a replica that is busy, has
# no such model loaded or lost its decode worker (503 / 500) may do better on the retry; a photo that
# spent its whole deadline (504) is not sent again, which would only add load to a service that is late.
STATUS: dict[type[InferenceError], int] = {
    UnsupportedImage: 422,
    ImageTooLarge: 422,
    EngineBusy: 503,
    ModelUnavailable: 503,
    DeadlineExceeded: 504,
    WorkerLost: 500,
}
ERRORS: dict[str, type[InferenceError]] = {cls.__name__: cls for cls in STATUS}
RETRIED = frozenset({EngineBusy, ModelUnavailable, WorkerLost})


def error_json(error: InferenceError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of a photo that could not be answered."""
    status = next((code for cls, code in STATUS.items() if type(error) is cls), None)
    if status is None:
        status = next((code for cls, code in STATUS.items() if isinstance(error, cls)), 500)
    name = next((cls.__name__ for cls in STATUS if isinstance(error, cls)), "InferenceError")
    body = {"error": name, "message": str(error), "reason": error.reason, "values": error.values}
    return status, body


def error_from_json(body: dict[str, Any]) -> InferenceError:
    """The error `error_json` described, as the same class with the same reason and values."""
    cls = ERRORS.get(str(body.get("error")), InferenceError)
    values = body.get("values") or {}
    return cls(str(body.get("message", "")), reason=body.get("reason"), **values)


def prediction_json(prediction: Prediction) -> dict[str, Any]:
    return {"prediction": prediction.to_json()}


def prediction_from_json(body: dict[str, Any]) -> Prediction:
    return Prediction.from_json(body["prediction"])


def dumps(data: Any) -> bytes:
    """JSON of plain values and NumPy scalars (a model's probabilities are float32)."""
    return json.dumps(data, default=_plain, allow_nan=False).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        item = value.item()
        return None if isinstance(item, float) and not math.isfinite(item) else item
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def status_json(status: ModelStatus) -> dict[str, Any]:
    """A ModelStatus as JSON (refused versions' numbers become strings, as JSON keys are)."""
    data: dict[str, Any] = asdict(status)
    data["refused"] = {str(k): v for k, v in status.refused.items()}
    return data


def status_from_json(data: dict[str, Any]) -> ModelStatus:
    fields = {**data, "labels": tuple(data.get("labels", ()))}
    fields["refused"] = {int(k): str(v) for k, v in data.get("refused", {}).items()}
    return ModelStatus(**fields)
