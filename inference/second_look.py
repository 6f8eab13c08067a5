"""A second look at an image classifier's answer before it is given: two weak signs that agree.

The flower rule (`inference.flowers`) refuses a photo on either sign alone, each with its own cut: far
from every flower class in feature space, or the pretrained network's ImageNet head sure of some other
thing. Photos of other things that get through mostly sit just inside the distance cut (in the
`unsure` band or at its edge) while the ImageNet head spreads its belief over many classes, few of them
the ones flower photos are taken for. Neither sign is enough there, together they are: a photo whose
distance is above `DISTANCE_SHARE` of the refusal distance *and* whose ImageNet probability on the
flowers' classes is below `FLOWER_MASS_BELOW` is refused. The same two signs, each a little weaker
(`DOUBT_SHARE`, `DOUBT_MASS_BELOW`), make a confident answer `unsure`: the bot names the flower it
sees but asks, as it would for a flower it half recognises. A real flower in that corner costs
one question; a lumber mill or a retina answered "tulips 74%" costs the bot its word.

The cuts belong to the version: with the bank of training photos (`training.photo_bank`), the
distances at which its validation flowers thin out (meta["ood"]["second_look"]); with the class-centre
detector, shares of its refusal distance. Either way they carry over to a retrained or re-fitted head;
a version without the ImageNet output or without either detector (a model taught from the chat
refuses by its nearest photo) is left as it is. Chosen on the validation flowers and on the
development halves of the package photos and `other_photos/` (docs/performance.md, "Real photos").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inference.prediction import Prediction

DISTANCE_SHARE = 0.9  # of meta["ood"]["reject_above"]: the unsure band and just below it
FLOWER_MASS_BELOW = 0.2  # the ImageNet head's probability on the flowers' classes, summed
DOUBT_SHARE = 0.85  # a confident answer this far out ...
DOUBT_MASS_BELOW = 0.4  # ... with this little of a flower to ImageNet is only `unsure`
METHOD = "mahalanobis-l2-lowrank"  # the detector whose distances these shares are relative to


@dataclass(frozen=True)
class Cuts:
    """The distances beyond which the two tiers apply."""

    refuse_above: float
    doubt_above: float

    @classmethod
    def of(cls, ood: dict[str, Any]) -> Cuts | None:
        """The version's own cuts, the shares of its class-centre refusal distance, or none."""
        if "second_look" in ood:
            return cls(float(ood["second_look"]["refuse_above"]), float(ood["second_look"]["doubt_above"]))
        if ood.get("method") == METHOD:
            reject = float(ood["reject_above"])
            return cls(reject * DISTANCE_SHARE, reject * DOUBT_SHARE)
        return None


def flower_mass(imagenet: np.ndarray, flower_classes: Sequence[int]) -> float:
    """How much of the ImageNet head's belief goes to the classes flower photos were taken for."""
    return float(np.asarray(imagenet, dtype=np.float64).reshape(-1)[list(flower_classes)].sum())


def distance_figure(value: float) -> str:
    """A distance as a reason shows it: Mahalanobis distances run to thousands, cosine ones stay
    near 1, where whole numbers would read "1 > 1"."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def second_look(
    prediction: Prediction,
    outputs: Sequence[np.ndarray],
    meta: dict[str, Any],
    distance: float | None = None,
) -> Prediction:
    """`prediction` refused when it is far-ish from the classes and unflowerlike to ImageNet, and made
    `unsure` when it is confident but both signs lean that way. `distance`: the photo's distance to the
    nearest class, by default the smallest of the model's distances output."""
    ood = meta.get("ood") or {}
    classes = (ood.get("imagenet") or {}).get("flower_classes") or ()
    cuts = Cuts.of(ood)
    if prediction.status == "not_recognized" or len(outputs) < 3 or cuts is None or not classes:
        return prediction
    if distance is None:
        distance = float(np.min(np.asarray(outputs[1], dtype=np.float64)))
    mass = flower_mass(outputs[2], classes)
    if distance <= cuts.refuse_above or mass >= FLOWER_MASS_BELOW:
        return _doubted(prediction, distance, cuts.doubt_above, mass)
    return replace(
        prediction,
        status="not_recognized",
        label=None,
        confidence=0.0,
        reason=f"unlike the flowers seen in training (distance {_beyond(distance, cuts.refuse_above)}) "
        f"and the network sees little of a flower in it ({mass:.0%} < {FLOWER_MASS_BELOW:.0%})",
    )


def _doubted(prediction: Prediction, distance: float, near: float, mass: float) -> Prediction:
    if prediction.status != "ok" or distance <= near or mass >= DOUBT_MASS_BELOW:
        return prediction
    return replace(
        prediction,
        status="unsure",
        reason=f"rather unlike the flowers seen in training (distance {_beyond(distance, near)}) and "
        f"the network sees little of a flower in it ({mass:.0%} < {DOUBT_MASS_BELOW:.0%})",
    )


def _beyond(distance: float, limit: float) -> str:
    return f"{distance_figure(distance)} > {distance_figure(limit)}"
