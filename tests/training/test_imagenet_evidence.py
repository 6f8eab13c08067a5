"""The ImageNet head's evidence in the flower model's refusal: fitted on flowers, read by serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.flowers import flowers_prediction, other_evidence
from inference.model_store import ModelVersion
from training.imagenet_evidence import fit_rule

LABELS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
OOD = {"unsure_above": 100.0, "reject_above": 200.0, "min_confidence": 0.3}


def one_hot_rows(classes: list[int], sure: float = 0.9) -> np.ndarray:
    rows = np.full((len(classes), 1000), (1 - sure) / 999)
    rows[np.arange(len(classes)), classes] = sure
    return rows


def test_the_flowers_classes_are_the_top_classes_of_training_flowers_and_thresholds_keep_validation() -> None:
    train = one_hot_rows([985] * 30 + [309] * 5 + [7])  # daisy, bee, and one photo taken for a cock
    validation = one_hot_rows([985] * 200, sure=0.6)
    validation[:, 500] = np.linspace(0.0, 0.3, 200)  # some flowers also look a little like class 500
    rule = fit_rule(train, validation)
    assert rule.flower_classes == (309, 985)  # a class one photo was taken for is not the flowers'
    assert rule.unsure_above <= rule.reject_above
    assert np.mean(other_evidence(validation, rule.flower_classes) > rule.reject_above) <= 0.01


def version(imagenet: dict | None) -> ModelVersion:
    ood = {**OOD, **({"imagenet": imagenet} if imagenet else {})}
    return ModelVersion("flowers", 3, Path("unused"), meta={"labels": LABELS, "ood": ood})


@pytest.mark.parametrize(
    ("other", "status"), [(0.2, "ok"), (0.5, "unsure"), (0.9, "not_recognized")], ids=["low", "half", "sure"]
)
def test_a_photo_the_network_takes_for_something_else_is_refused(other: float, status: str) -> None:
    probabilities = np.array([0.9, 0.05, 0.02, 0.02, 0.01])
    distances = np.full(5, 50.0)  # close to the flowers in feature space: the distance alone says ok
    imagenet = np.full(1000, (1 - other) / 999)
    imagenet[600] = other  # say, a hook
    rule = {"flower_classes": [985, 309], "unsure_above": 0.4, "reject_above": 0.8}
    answer = flowers_prediction([probabilities, distances, imagenet], version(rule))
    assert answer.status == status
    assert answer.model == "flowers"
    assert (answer.label is None) == (status == "not_recognized")


def test_a_model_without_the_imagenet_output_answers_as_before() -> None:
    probabilities = np.array([0.9, 0.05, 0.02, 0.02, 0.01])
    answer = flowers_prediction([probabilities, np.full(5, 50.0)], version(None))
    assert (answer.status, answer.label) == ("ok", "daisy")
