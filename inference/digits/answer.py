"""The answer: the model's probabilities for each crop → a digit or a number, with a status."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.prediction import DigitAnswer, Prediction, Status

LABELS = tuple(str(d) for d in range(10))

UNSURE_BELOW = 0.80  # a digit less sure than this makes the answer "unsure" (ask the user)
NOT_RECOGNIZED_BELOW = 0.35  # a digit less sure than this means the model does not see a digit at all


def digits_prediction(
    probs: np.ndarray,
    labels: Sequence[str] = LABELS,
    version: int | None = None,
    *,
    reason: str | None = None,
) -> Prediction:
    """Turn the model's (k, 10) probabilities for k crops into an answer.

    One crop is a digit, several are a number read left to right; the number's confidence is the product
    of its digits', and its `top` is the ranking of its least sure digit. The status is `not_recognized`
    when there are no crops or the model recognises no digit in one of them, `unsure` when one digit is
    below UNSURE_BELOW, `ok` otherwise. `reason` (from DigitCrops) explains an empty answer.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(labels))
    if len(probs) == 0:
        return Prediction(
            model="digits",
            version=version,
            label=None,
            confidence=0.0,
            status="not_recognized",
            reason=reason or "no digit found on the photo",
        )
    answers = tuple(_digit_answer(row, labels) for row in probs)
    weakest = min(answers, key=lambda a: a.confidence)
    confidence = float(np.prod([a.confidence for a in answers]))
    label = "".join(a.label for a in answers)
    status: Status
    if weakest.confidence < NOT_RECOGNIZED_BELOW:
        status, why = "not_recognized", "the marks do not look like digits to the model"
    elif weakest.confidence < UNSURE_BELOW:
        status, why = "unsure", f"not sure about a digit ({weakest.label} at {weakest.confidence:.0%})"
    else:
        status, why = "ok", None
    return Prediction(
        model="digits",
        version=version,
        label=None if status == "not_recognized" else label,
        confidence=confidence,
        status=status,
        top=weakest.top,
        digits=answers,
        reason=why,
    )


def _digit_answer(row: np.ndarray, labels: Sequence[str], keep: int = 5) -> DigitAnswer:
    order = np.argsort(row)[::-1][:keep]
    top = tuple((labels[i], float(row[i])) for i in order)
    return DigitAnswer(label=top[0][0], confidence=top[0][1], top=top)
