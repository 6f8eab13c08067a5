"""What the bot asks of a classifier: the in-process `Classifier`, or `RemoteClassifier` over HTTP to
the Ray Serve application (INFERENCE_URL). The composition root picks one; the bot sees this."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from inference.catalogue import Catalogue, ModelSpec
from inference.classifier import ModelStatus
from inference.model_store import ModelStore, ModelVersion
from inference.prediction import Mode, Prediction


class PhotoClassifier(Protocol):
    catalogue: Catalogue  # every mode it answers; taught models join with add_model
    store: ModelStore  # the model store whose active versions serve

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def has_room(self, coming: int = 0) -> bool:
        """Whether one more photo would be taken now (asked before it is downloaded)."""
        ...

    async def classify(self, data: bytes | Path, mode: Mode = "auto") -> Prediction: ...

    def models(self) -> dict[str, ModelStatus]:
        """What serves, per model name."""
        ...

    async def reload(self, name: str) -> ModelVersion:
        """Serve the store's active version of `name` (after a promotion or a rollback)."""
        ...

    async def add_model(self, spec: ModelSpec) -> None: ...

    async def remove_model(self, name: str) -> None: ...
