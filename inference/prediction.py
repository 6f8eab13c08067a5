"""What the engine answers for one photo."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "unsure", "not_recognized"]
# A chat mode: "auto" or the mode of a model in the catalogue (`/digit` → "digit"); a catalogue can add
# modes, so this is any string, and the classifier checks it against its own catalogue.
Mode = str
MODES: tuple[Mode, ...] = ("auto", "digit", "flower")


@dataclass(frozen=True)
class DigitAnswer:
    """One digit of a number read left to right."""

    label: str
    confidence: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Prediction:
    """The answer for one photo.

    `label` is exactly what the model calls it (`"7"`, `"2026"`, `"tulips"`), or None when nothing was
    recognised. `confidence` is in [0, 1]; for a number it is the product of its digits' confidences.
    `top` lists (label, probability) best first; for a number it is the top of its least sure digit.
    """

    model: str | None  # "digits", "flowers", or None when the photo is neither
    version: int | None
    label: str | None
    confidence: float
    status: Status
    top: tuple[tuple[str, float], ...] = ()
    digits: tuple[DigitAnswer, ...] = ()  # one per digit when a number was read
    reason: str | None = None  # why the answer is unsure / not recognised, for logs and the reply
    timings_ms: dict[str, float] = field(default_factory=dict)  # decode, preprocess, queue, model, total
    # what an image classifier's ImageNet head says beside its answer, for auto mode's router
    # (`inference.router.page_evidence`: "page", "thing"); empty for other models
    evidence: dict[str, float] = field(default_factory=dict)

    @property
    def runner_up(self) -> tuple[str, float] | None:
        return self.top[1] if len(self.top) > 1 else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["top"] = [list(pair) for pair in self.top]
        data["digits"] = [
            {"label": d.label, "confidence": d.confidence, "top": [list(p) for p in d.top]}
            for d in self.digits
        ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        """The Prediction `to_json` wrote (the answer of a remote engine: `inference.remote`)."""
        return cls(
            model=data["model"],
            version=data["version"],
            label=data["label"],
            confidence=float(data["confidence"]),
            status=data["status"],
            top=tuple((str(label), float(p)) for label, p in data.get("top", ())),
            digits=tuple(
                DigitAnswer(
                    str(d["label"]), float(d["confidence"]), tuple((str(k), float(p)) for k, p in d["top"])
                )
                for d in data.get("digits", ())
            ),
            reason=data.get("reason"),
            timings_ms={str(k): float(v) for k, v in data.get("timings_ms", {}).items()},
            evidence={str(k): float(v) for k, v in data.get("evidence", {}).items()},
        )
