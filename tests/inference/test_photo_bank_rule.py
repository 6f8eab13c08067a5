"""Reading a photo-bank model's distances: a class is as near as the mean of its nearest photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.flowers import (
    PHOTOS_PER_NEIGHBOUR,
    OodRule,
    class_neighbour_distances,
    class_neighbours,
    flowers_prediction,
)
from inference.model_store import ModelStore


def test_a_class_distance_is_the_mean_of_its_nearest_photos() -> None:
    counts = (3 * PHOTOS_PER_NEIGHBOUR, PHOTOS_PER_NEIGHBOUR)  # three neighbours, and one
    first = np.linspace(2.0, 0.5, counts[0])  # its three smallest: 0.5 and the two just above
    second = np.full(counts[1], 1.0)
    second[7] = 0.2
    distances = np.concatenate([first, second])[None, :]
    step = 1.5 / (counts[0] - 1)
    expected = [np.mean([0.5, 0.5 + step, 0.5 + 2 * step]), 0.2]
    np.testing.assert_allclose(class_neighbour_distances(distances, counts, most=25), [expected])
    # at most `most` neighbours, at least one
    assert class_neighbours(10_000, 25) == 25 and class_neighbours(3, 25) == 1
    np.testing.assert_allclose(class_neighbour_distances(distances, counts, most=1), [[0.5, 0.2]])


def test_distances_that_do_not_match_the_bank_are_an_error() -> None:
    with pytest.raises(ValueError, match="5 distances for a bank of 6 photos"):
        class_neighbour_distances(np.zeros((1, 5)), (3, 3), most=2)


def test_the_rule_reads_the_bank_from_meta_and_answers_by_the_nearest_class(tmp_path: Path) -> None:
    counts = [PHOTOS_PER_NEIGHBOUR * 2, PHOTOS_PER_NEIGHBOUR * 2]  # two neighbours a class
    ood = {
        "method": "photo-neighbours-cosine",
        "bank": {"counts": counts, "neighbours": 25},
        "unsure_above": 1.0,
        "reject_above": 1.2,
        "min_confidence": 0.5,
    }
    store = ModelStore(tmp_path)
    with store.new_version("flowers", {"labels": ["daisy", "roses"], "ood": ood}):
        pass
    version = store.get("flowers", 1)
    rule = OodRule.from_meta(ood)
    assert rule.bank_counts == tuple(counts) and rule.neighbours == 25

    def photo(near: float, lonely: float) -> np.ndarray:
        """Every daisy photo far (1.9) but one at `lonely`, the roses' two nearest at `near`."""
        daisies = np.full(counts[0], 1.9)
        daisies[0] = lonely
        roses = np.full(counts[1], 1.9)
        roses[:2] = near
        return np.concatenate([daisies, roses])

    sure = np.array([0.2, 0.8])
    assert flowers_prediction([sure, photo(near=0.9, lonely=1.9)], version).status == "ok"
    # one daisy photo close by does not make a photo near the daisies: the mean of two is 1.05
    unsure = flowers_prediction([sure, photo(near=1.9, lonely=0.2)], version)
    assert (unsure.status, unsure.label) == ("unsure", "roses")
    assert unsure.reason == "unlike the flowers seen in training (distance 1.05 > 1.00)"
    refused = flowers_prediction([sure, photo(near=1.3, lonely=1.9)], version)
    assert (refused.status, refused.label) == ("not_recognized", None)
