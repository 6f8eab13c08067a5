"""The second look at a flower answer: refused only when both weak signs agree."""

from __future__ import annotations

import numpy as np

from inference.prediction import Prediction, Status
from inference.second_look import (
    DISTANCE_SHARE,
    DOUBT_MASS_BELOW,
    DOUBT_SHARE,
    FLOWER_MASS_BELOW,
    second_look,
)

META = {
    "ood": {
        "method": "mahalanobis-l2-lowrank",
        "reject_above": 1000.0,
        "imagenet": {"flower_classes": [985, 309]},
    }
}


def answer(status: Status = "unsure") -> Prediction:
    return Prediction(model="flowers", version=1, label="roses", confidence=0.6, status=status)


def outputs(distance: float, flower_mass: float) -> list[np.ndarray]:
    imagenet = np.full(1000, (1.0 - flower_mass) / 998)
    imagenet[[985, 309]] = flower_mass / 2
    return [np.array([0.6, 0.4]), np.array([distance, distance * 1.5]), imagenet]


def test_far_and_unflowerlike_is_refused():
    far = 1000.0 * DISTANCE_SHARE + 1
    refused = second_look(answer("ok"), outputs(far, FLOWER_MASS_BELOW / 2), META)
    assert (refused.status, refused.label, refused.confidence) == ("not_recognized", None, 0.0)


def test_one_sign_alone_changes_nothing():
    near, far = 1000.0 * DISTANCE_SHARE - 1, 1000.0 * DISTANCE_SHARE + 1
    assert second_look(answer(), outputs(near, 0.0), META) == answer()
    assert second_look(answer(), outputs(far, FLOWER_MASS_BELOW * 2), META) == answer()


def test_a_confident_answer_that_both_signs_lean_against_is_only_unsure():
    """Out to DOUBT_SHARE and under DOUBT_MASS_BELOW: the label stays, as a question."""
    leaning = 1000.0 * DOUBT_SHARE + 1
    doubted = second_look(answer("ok"), outputs(leaning, DOUBT_MASS_BELOW - 0.05), META)
    assert (doubted.status, doubted.label, doubted.confidence) == ("unsure", "roses", 0.6)
    assert "little of a flower" in doubted.reason
    # either sign alone leaves a confident answer as it is
    assert second_look(answer("ok"), outputs(leaning, DOUBT_MASS_BELOW + 0.05), META) == answer("ok")
    closer = 1000.0 * DOUBT_SHARE - 1
    assert second_look(answer("ok"), outputs(closer, 0.0), META) == answer("ok")


def test_a_model_with_another_detector_or_without_imagenet_is_left_alone():
    taught = {"ood": {**META["ood"], "method": "nearest-photo-cosine"}}
    far_and_unflowerlike = outputs(5000.0, 0.0)
    assert second_look(answer(), far_and_unflowerlike, taught) == answer()
    assert second_look(answer(), far_and_unflowerlike[:2], META) == answer()


def test_a_photo_bank_version_uses_its_own_cuts_and_the_distance_it_is_given():
    """A version with the bank of training photos carries its cuts in meta["ood"]["second_look"], in
    its own units (cosine distances near 1), and is measured by the class distance the rule computed,
    not by the smallest distance to one photo of the bank."""
    bank = {
        "ood": {
            "method": "photo-neighbours-cosine",
            "reject_above": 1.3,
            "second_look": {"refuse_above": 1.2, "doubt_above": 1.18},
            "imagenet": {"flower_classes": [985, 309]},
        }
    }
    photo_distances = outputs(0.5, 0.0)  # one bank photo close by: not what the cuts are about
    refused = second_look(answer("ok"), photo_distances, bank, distance=1.21)
    assert refused.status == "not_recognized"
    assert "distance 1.21 > 1.20" in refused.reason
    doubted = second_look(answer("ok"), photo_distances, bank, distance=1.19)
    assert (doubted.status, doubted.label) == ("unsure", "roses")
    assert second_look(answer("ok"), photo_distances, bank, distance=1.17) == answer("ok")
    assert second_look(answer("ok"), outputs(0.5, DOUBT_MASS_BELOW), bank, distance=1.19) == answer("ok")
