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

Both cuts are relative to the version's own rule (its refusal distance, its flowers' ImageNet
classes), so they carry over to a retrained or re-fitted head; a version without the ImageNet output
or without that class-distance detector (a model taught from the chat refuses by its nearest photo) is
left as it is. Chosen on the validation flowers and on the development halves of the package photos
and `other_photos/` (docs/performance.md, "Real photos").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from inference.prediction import Prediction

DISTANCE_SHARE = 0.9  # of meta["ood"]["reject_above"]: the unsure band and just below it
FLOWER_MASS_BELOW = 0.2  # the ImageNet head's probability on the flowers' classes, summed
DOUBT_SHARE = 0.85  # a confident answer this far out ...
DOUBT_MASS_BELOW = 0.4  # ... with this little of a flower to ImageNet is only `unsure`
METHOD = "mahalanobis-l2-lowrank"  # the detector whose distances these cuts are relative to


def flower_mass(imagenet: np.ndarray, flower_classes: Sequence[int]) -> float:
    """How much of the ImageNet head's belief goes to the classes flower photos were taken for."""
    return float(np.asarray(imagenet, dtype=np.float64).reshape(-1)[list(flower_classes)].sum())


def second_look(prediction: Prediction, outputs: Sequence[np.ndarray], meta: dict[str, Any]) -> Prediction:
    """`prediction` refused when it is far-ish from the classes and unflowerlike to ImageNet, and made
    `unsure` when it is confident but both signs lean that way."""
    ood = meta.get("ood") or {}
    classes = (ood.get("imagenet") or {}).get("flower_classes") or ()
    if prediction.status == "not_recognized" or len(outputs) < 3 or ood.get("method") != METHOD:
        return prediction
    if not classes:
        return prediction
    distance = float(np.min(np.asarray(outputs[1], dtype=np.float64)))
    near = float(ood["reject_above"]) * DISTANCE_SHARE
    mass = flower_mass(outputs[2], classes)
    if distance <= near or mass >= FLOWER_MASS_BELOW:
        return _doubted(prediction, distance, float(ood["reject_above"]) * DOUBT_SHARE, mass)
    return replace(
        prediction,
        status="not_recognized",
        label=None,
        confidence=0.0,
        reason=f"unlike the flowers seen in training (distance {distance:.0f} > {near:.0f}) and the "
        f"network sees little of a flower in it ({mass:.0%} < {FLOWER_MASS_BELOW:.0%})",
    )


def _doubted(prediction: Prediction, distance: float, near: float, mass: float) -> Prediction:
    if prediction.status != "ok" or distance <= near or mass >= DOUBT_MASS_BELOW:
        return prediction
    return replace(
        prediction,
        status="unsure",
        reason=f"rather unlike the flowers seen in training (distance {distance:.0f} > {near:.0f}) and "
        f"the network sees little of a flower in it ({mass:.0%} < {DOUBT_MASS_BELOW:.0%})",
    )
