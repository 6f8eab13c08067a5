"""Inline keyboards: ✅ / ❌ under an answer, the label picker, the /forget confirmation."""

from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot import callbacks
from bot.texts import text

DIGIT_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
FLOWER_LABELS: tuple[str, ...] = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def verdict(lang: str, prediction_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                _button(text(lang, "button_correct"), callbacks.Verdict(prediction_id, True)),
                _button(text(lang, "button_wrong"), callbacks.Verdict(prediction_id, False)),
            ]
        ]
    )


def labels(
    lang: str, prediction_id: int, model: str | None, label_sets: dict[str, Sequence[str]]
) -> InlineKeyboardMarkup:
    """One button per label of the answer's model, named by the label itself, then "Not a …" and back.

    An answer with no model (nothing recognised) offers every label of every model, then "Neither".
    """
    rows: list[list[InlineKeyboardButton]] = []
    models = [model] if model else list(label_sets)
    for name in models:
        names = list(label_sets.get(name, ()))
        width = 5 if all(len(n) <= 2 for n in names) else 3
        for start in range(0, len(names), width):
            rows.append(
                [_button(n, callbacks.LabelChoice(prediction_id, n)) for n in names[start : start + width]]
            )
    none_key = {"digits": "button_not_digit", "flowers": "button_not_flower"}.get(
        model or "", "button_neither"
    )
    rows.append([_button(text(lang, none_key), callbacks.LabelChoice(prediction_id, None))])
    rows.append([_button(text(lang, "button_back"), callbacks.BackToVerdict(prediction_id))])
    return InlineKeyboardMarkup(rows)


def forget(lang: str, user_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                _button(text(lang, "forget_yes"), callbacks.ForgetChoice(user_id, True)),
                _button(text(lang, "forget_no"), callbacks.ForgetChoice(user_id, False)),
            ]
        ]
    )


def _button(caption: str, data: callbacks.CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(caption, callback_data=callbacks.encode(data))
