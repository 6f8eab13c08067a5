"""Inline keyboards: ✅ / ❌ under an answer, the choices of an unsure answer, the label picker, what
stays under a number while the bot waits for the right one, the /forget and /rollback confirmations.
Labels are shown in the user's language and travel as the model names them."""

from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot import callbacks
from bot.texts import text
from inference.catalogue import Catalogue, ModelSpec

MAX_BUTTONS = 100  # Telegram refuses an inline keyboard with more


def verdict(lang: str, prediction_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                _button(text(lang, "button_correct"), callbacks.Verdict(prediction_id, True)),
                _button(text(lang, "button_wrong"), callbacks.Verdict(prediction_id, False)),
            ]
        ]
    )


def choices(lang: str, prediction_id: int, spec: ModelSpec, offered: Sequence[str]) -> InlineKeyboardMarkup:
    """An unsure answer asks with the labels it offers, "neither" and "something else": a label is
    recorded only when the user picks it, never because they agreed with a guess."""
    row = [
        _button(spec.shown_label(label, lang), callbacks.LabelChoice(prediction_id, label))
        for label in offered
    ]
    return InlineKeyboardMarkup(
        [
            row,
            [
                _button(_none_caption(spec, lang), callbacks.LabelChoice(prediction_id, None)),
                _button(text(lang, "button_other"), callbacks.Verdict(prediction_id, False)),
            ],
        ]
    )


def labels(
    lang: str,
    prediction_id: int,
    model: str | None,
    catalogue: Catalogue,
    *,
    offered: Sequence[str] = (),
    refused: bool = False,
) -> InlineKeyboardMarkup:
    """One button per label of the answer's model, in the user's language, then "Not a …" and back.

    An answer with no model (nothing recognised) offers the labels of the `offered` models (those that
    serve; every model without), each model whole and in order while Telegram's limit on buttons
    leaves room; it offers no "Neither" (`refused`): that was the bot's own answer, and ✅ says so.
    """
    rows: list[list[InlineKeyboardButton]] = []
    spec = catalogue.get(model)
    specs = [spec] if spec else _fitting([catalogue[n] for n in offered or catalogue.names])
    for each in specs:
        names = each.label_names
        width = 5 if all(len(n) <= 2 for n in names) else 3
        for start in range(0, len(names), width):
            rows.append(
                [
                    _button(each.shown_label(n, lang), callbacks.LabelChoice(prediction_id, n))
                    for n in names[start : start + width]
                ]
            )
    if spec is not None:
        rows.append([_button(_none_caption(spec, lang), callbacks.LabelChoice(prediction_id, None))])
    elif not refused:
        rows.append([_button(text(lang, "button_neither"), callbacks.LabelChoice(prediction_id, None))])
    rows.append([_button(text(lang, "button_back"), callbacks.BackToVerdict(prediction_id))])
    return InlineKeyboardMarkup(rows)


def _fitting(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """The first models whose labels fit in one keyboard beside "Neither" and "Back"."""
    room, fitting = MAX_BUTTONS - 2, []
    for spec in specs:
        if len(spec.label_names) <= room:
            fitting.append(spec)
            room -= len(spec.label_names)
    return fitting


def number_question(lang: str, prediction_id: int, spec: ModelSpec) -> InlineKeyboardMarkup:
    """Under a number whose ❌ was pressed: the right number is typed, so only "Not a digit" and back."""
    return InlineKeyboardMarkup(
        [
            [_button(_none_caption(spec, lang), callbacks.LabelChoice(prediction_id, None))],
            [_button(text(lang, "button_back"), callbacks.BackToVerdict(prediction_id))],
        ]
    )


def rollback(lang: str, admin_id: int, model: str, current: int, target: int) -> InlineKeyboardMarkup:
    def choice(confirmed: bool) -> callbacks.RollbackChoice:
        return callbacks.RollbackChoice(admin_id, model, current, target, confirmed)

    return InlineKeyboardMarkup(
        [
            [
                _button(text(lang, "rollback_yes"), choice(True)),
                _button(text(lang, "rollback_no", current=current), choice(False)),
            ]
        ]
    )


def forget(lang: str, user_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                _button(text(lang, "forget_yes"), callbacks.ForgetChoice(user_id, True)),
                _button(text(lang, "forget_no"), callbacks.ForgetChoice(user_id, False)),
            ]
        ]
    )


def _none_caption(spec: ModelSpec, lang: str) -> str:
    return spec.none_label.get(lang) or spec.none_label.get("en") or text(lang, "button_neither")


def _button(caption: str, data: callbacks.CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(caption, callback_data=callbacks.encode(data))
