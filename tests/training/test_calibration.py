"""Expected calibration error: the count-weighted gap between confidence and accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import expected_calibration_error, reliability


def test_answers_right_as_often_as_they_claim_have_no_calibration_error() -> None:
    confidences = [0.95] * 20 + [0.55] * 20
    correct = [True] * 19 + [False] + [True] * 11 + [False] * 9
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.0)


def test_an_overconfident_model_has_the_gap_as_its_error() -> None:
    # always 90% sure, right half the time: 40 points off
    assert expected_calibration_error([0.9] * 10, [True, False] * 5) == pytest.approx(0.4)


def test_bins_weigh_by_their_counts() -> None:
    confidences = [0.95] * 30 + [0.65] * 10
    correct = [True] * 30 + [True] * 10  # the top bin is 5 points under, the other 35
    table = reliability(confidences, correct)
    assert table.counts.sum() == 40
    assert table.ece == pytest.approx((30 * 0.05 + 10 * 0.35) / 40)
    assert np.count_nonzero(table.counts) == 2


def test_no_answers_no_error() -> None:
    assert expected_calibration_error([], []) == 0.0
