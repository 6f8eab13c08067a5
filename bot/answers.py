"""The text of an answer: the label and its confidence on the first line, then the runner-up (or, for a
number, every digit), then what `unsure` / `not_recognized` mean. Labels are shown in the user's
language (`розы` for `roses`); a refusal names what the chat's mode looked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.texts import percent, text
from inference.catalogue import Catalogue, ModelKind, ModelSpec
from inference.prediction import Prediction


def format_answer(
    prediction: Prediction,
    lang: str,
    catalogue: Catalogue,
    mode: str = "auto",
    *,
    labelled: bool = False,
    taught: Sequence[str] = (),
    answering: Sequence[str] | None = None,
) -> str:
    """The answer's text; `labelled`: the person captioned the photo with its label, so a refusal does
    not ask for the photo again (its label is recorded all the same); `taught`: the taught models that
    serve, which auto mode asked too; `answering`: the labels the mode's model answers with now."""
    spec = catalogue.get(prediction.model)
    if prediction.status == "not_recognized" or prediction.label is None:
        said = refusal(lang, catalogue.for_mode(mode), taught, answering)
        return said.split("\n", 1)[0] if labelled else said  # the refusals' second line: what to do

    def shown(label: str) -> str:
        return spec.shown_label(label, lang) if spec else label

    lines = [
        text(lang, "confidence_line", label=shown(prediction.label), percent=percent(prediction.confidence))
    ]
    if len(prediction.digits) > 1:
        digits = ", ".join(f"{d.label} ({percent(d.confidence)}%)" for d in prediction.digits)
        lines.append(text(lang, "digits_line", digits=digits))
    elif (runner_up := worth_showing(prediction)) is not None:
        label, probability = runner_up
        lines.append(text(lang, "runner_up", label=shown(label), percent=percent(probability)))
    if prediction.status == "unsure":
        lines.append(_doubt(prediction, lang, shown))
    return "\n".join(lines)


def _doubt(prediction: Prediction, lang: str, shown: Callable[[str], str]) -> str:
    """Why an answer asks: two labels are close, or one is clear but the photo may show none of them
    ("4 — 99%" of a digit drawn in an app that fills the frame: sure which digit, not that it is one)."""
    label = prediction.label or ""
    other = _other_candidate(prediction)
    if other is None:
        return text(lang, "unsure_single")
    if worth_showing(prediction) is None:  # the runner-up rounds to 0%: the doubt is whether, not which
        return text(lang, "unsure_whether", label=shown(label))
    return text(lang, "unsure", label=shown(label), other=shown(other))


def refusal(
    lang: str, spec: ModelSpec | None, taught: Sequence[str] = (), labels: Sequence[str] | None = None
) -> str:
    """What the bot says when it sees nothing it knows: in a model's mode, what that model looked for
    (`labels`: those its serving version answers with; the catalogue's by default); in auto mode, the
    digits, the flowers and the `taught` models it asked too."""
    if spec is None:
        return (
            text(lang, "not_recognized_taught", models=", ".join(taught))
            if taught
            else text(lang, "not_recognized")
        )
    if spec.kind == ModelKind.DIGIT_READER:
        return text(lang, "not_recognized_digit")
    names = [spec.shown_label(name, lang) for name in (spec.label_names if labels is None else labels)]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {text(lang, 'or')} {names[-1]}"
    return text(lang, "not_recognized_model", labels=listed)


def worth_showing(prediction: Prediction) -> tuple[str, float] | None:
    """The runner-up, unless it rounds to 0%: "Runner-up: 7 (0%)" tells the user nothing."""
    runner_up = prediction.runner_up
    return runner_up if runner_up is not None and percent(runner_up[1]) > 0 else None


def offered_labels(prediction: Prediction) -> list[str]:
    """The labels an unsure answer asks about: the guess and, for a single label, the runner-up."""
    if prediction.label is None:
        return []
    other = _other_candidate(prediction)
    return [prediction.label, other] if other else [prediction.label]


def _other_candidate(prediction: Prediction) -> str | None:
    """For a single label, the runner-up; for a number, none (the digits line already shows them)."""
    if len(prediction.digits) > 1 or prediction.runner_up is None:
        return None
    return prediction.runner_up[0]
