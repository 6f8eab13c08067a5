"""Callback data: one small typed schema, encoded within Telegram's 64 bytes and checked on the way in.

Buttons outlive bot versions and can be pressed by anyone who sees them, so decoding never trusts the
data: anything that does not parse is `MalformedCallback`, and handlers still check who pressed and
whether the prediction exists.

    v:<prediction>:y|n       ✅ Correct / ❌ Wrong under an answer
    l:<prediction>:<label>   a label from the keyboard; an empty label means "neither" (Not a digit / flower)
    b:<prediction>           back from the label keyboard to ✅ / ❌
    f:<user>:y|n             /forget confirmation
    r:<admin>:<model>:<from>:<to>:y|n   /rollback confirmation: only that admin may press it
    d:<admin>:<model>:y|n    /delmodel confirmation: only that admin may press it
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_BYTES = 64
MAX_ID_DIGITS = 18  # 19 digits can pass SQLite's largest integer (2**63 - 1) and crash the lookup
_LABEL = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_ID = re.compile(rf"[1-9][0-9]{{0,{MAX_ID_DIGITS - 1}}}")  # ASCII digits only: not "²" or "٣"


class MalformedCallback(ValueError):
    """Callback data that this bot version did not write."""


@dataclass(frozen=True)
class Verdict:
    prediction_id: int
    correct: bool


@dataclass(frozen=True)
class LabelChoice:
    prediction_id: int
    label: str | None  # None: neither a digit nor a flower


@dataclass(frozen=True)
class BackToVerdict:
    prediction_id: int


@dataclass(frozen=True)
class ForgetChoice:
    user_id: int
    confirmed: bool


@dataclass(frozen=True)
class RollbackChoice:
    admin_id: int  # who asked: only they may confirm
    model: str
    current: int  # the version serving when asked: a confirmation after it changed is stale
    target: int
    confirmed: bool


@dataclass(frozen=True)
class DeleteModelChoice:
    admin_id: int  # who asked: only they may confirm
    model: str
    confirmed: bool


CallbackData = Verdict | LabelChoice | BackToVerdict | ForgetChoice | RollbackChoice | DeleteModelChoice


def encode(data: CallbackData) -> str:
    """The button's callback_data; raises ValueError for what could not be decoded again."""
    match data:
        case Verdict(prediction_id, correct):
            text = f"v:{prediction_id}:{'y' if correct else 'n'}"
        case LabelChoice(prediction_id, label):
            if label is not None and not _LABEL.fullmatch(label):
                raise ValueError(f"label {label!r} cannot travel in callback data")
            text = f"l:{prediction_id}:{label or ''}"
        case BackToVerdict(prediction_id):
            text = f"b:{prediction_id}"
        case ForgetChoice(user_id, confirmed):
            text = f"f:{user_id}:{'y' if confirmed else 'n'}"
        case RollbackChoice(admin_id, model, current, target, confirmed):
            if not _LABEL.fullmatch(model):
                raise ValueError(f"model {model!r} cannot travel in callback data")
            text = f"r:{admin_id}:{model}:{current}:{target}:{'y' if confirmed else 'n'}"
        case DeleteModelChoice(admin_id, model, confirmed):
            if not _LABEL.fullmatch(model):
                raise ValueError(f"model {model!r} cannot travel in callback data")
            text = f"d:{admin_id}:{model}:{'y' if confirmed else 'n'}"
        case _:
            raise TypeError(f"not callback data: {data!r}")
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {text!r}")
    if decode(text) != data:
        raise ValueError(f"callback data does not round-trip: {data!r}")
    return text


def decode(text: str | None) -> CallbackData:
    """Parse callback data; anything unexpected raises MalformedCallback."""
    if not text or len(text.encode("utf-8")) > MAX_BYTES:
        raise MalformedCallback(f"callback data is empty or too long: {text!r}")
    kind, *fields = text.split(":")
    try:
        match kind, fields:
            case "v", [number, ("y" | "n") as flag]:
                return Verdict(_id(number), flag == "y")
            case "l", [number, label] if label == "" or _LABEL.fullmatch(label):
                return LabelChoice(_id(number), label or None)
            case "b", [number]:
                return BackToVerdict(_id(number))
            case "f", [number, ("y" | "n") as flag]:
                return ForgetChoice(_id(number), flag == "y")
            case "r", [admin, model, current, target, ("y" | "n") as flag] if _LABEL.fullmatch(model):
                return RollbackChoice(_id(admin), model, _id(current), _id(target), flag == "y")
            case "d", [admin, model, ("y" | "n") as flag] if _LABEL.fullmatch(model):
                return DeleteModelChoice(_id(admin), model, flag == "y")
    except ValueError as error:
        raise MalformedCallback(f"bad callback data {text!r}: {error}") from None
    raise MalformedCallback(f"unknown callback data {text!r}")


def _id(text: str) -> int:
    """A positive id of at most MAX_ID_DIGITS ASCII digits; `fullmatch`, since `$` lets "12\\n" through."""
    if not _ID.fullmatch(text):
        raise ValueError(f"not an id: {text!r}")
    return int(text)
