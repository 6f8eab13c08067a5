"""The text of an answer: the label exactly as the model names it and its confidence on the first line,
then the runner-up (or, for a number, every digit), then what `unsure` / `not_recognized` mean."""

from __future__ import annotations

from bot.texts import percent, text
from inference.prediction import Prediction


def format_answer(prediction: Prediction, lang: str) -> str:
    if prediction.status == "not_recognized" or prediction.label is None:
        return text(lang, "not_recognized")
    lines = [text(lang, "confidence_line", label=prediction.label, percent=percent(prediction.confidence))]
    if len(prediction.digits) > 1:
        digits = ", ".join(f"{d.label} ({percent(d.confidence)}%)" for d in prediction.digits)
        lines.append(text(lang, "digits_line", digits=digits))
    elif prediction.runner_up is not None:
        label, probability = prediction.runner_up
        lines.append(text(lang, "runner_up", label=label, percent=percent(probability)))
    if prediction.status == "unsure":
        other = _other_candidate(prediction)
        lines.append(
            text(lang, "unsure", label=prediction.label, other=other)
            if other
            else text(lang, "unsure_single")
        )
    return "\n".join(lines)


def _other_candidate(prediction: Prediction) -> str | None:
    """For a single label, the runner-up; for a number, none (the digits line already shows them)."""
    if len(prediction.digits) > 1 or prediction.runner_up is None:
        return None
    return prediction.runner_up[0]
