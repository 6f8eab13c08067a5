"""Expected calibration error: the count-weighted gap between confidence and accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import expected_calibration_error, fit_temperature, reliability


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


def test_the_temperature_undoes_a_head_that_is_too_sure_or_not_sure_enough() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (4000, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(5, p=p) for p in probabilities])  # labels drawn as the logits say
    assert fit_temperature(logits, truth) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(3 * logits, truth) == pytest.approx(3.0, rel=0.1)  # too sure: T > 1
    assert fit_temperature(logits / 4, truth) == pytest.approx(0.25, rel=0.1)  # not sure enough
    assert fit_temperature(np.zeros((0, 5)), np.zeros(0, np.int64)) == 1.0
