"""Telegram's wire format: request parameters as the Bot API reads them, its error shape and its limits."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from aiohttp import web

MAX_CALLBACK_DATA_BYTES = 64
MAX_MESSAGE_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
_TAG = re.compile(r"<[^>]*>")

Json = dict[str, Any]


class BotApiError(Exception):
    """A method failed; it is answered in Telegram's shape."""

    def __init__(self, description: str, code: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


async def read_params(request: web.Request) -> Json:
    """A method's parameters from the query string and a JSON, form or multipart body."""
    params: Json = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise BotApiError("Bad Request: can't parse JSON") from None
        params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
    elif request.can_read_body:
        params.update(await request.post())
    return params


def error_response(error: BotApiError) -> web.Response:
    body = {"ok": False, "error_code": error.code, "description": error.description}
    return web.json_response(body, status=error.code)


def str_param(params: Json, name: str, default: str | None = None) -> str:
    value = params.get(name)
    if value is None:
        if default is None:
            raise BotApiError(f"Bad Request: {name} is empty")
        return default
    return str(value)


def int_param(params: Json, name: str, default: int | None = None) -> int:
    value = params.get(name)
    if value in (None, ""):
        if default is None:
            raise BotApiError(f"Bad Request: {name} is empty")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BotApiError(f"Bad Request: invalid {name} specified") from None


def float_param(params: Json, name: str, default: float) -> float:
    value = params.get(name)
    try:
        return default if value in (None, "") else float(value)
    except (TypeError, ValueError):
        raise BotApiError(f"Bad Request: invalid {name} specified") from None


def bool_param(params: Json, name: str) -> bool:
    return str(params.get(name, "")).lower() in ("true", "1")


def json_param(params: Json, name: str, default: Any) -> Any:
    value = params.get(name)
    if value in (None, ""):
        return default
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise BotApiError(f"Bad Request: can't parse {name} JSON object") from None


def markup_param(params: Json) -> Json | None:
    """Check an inline keyboard against Telegram's rules; other markups are kept as they are."""
    markup = json_param(params, "reply_markup", None)
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise BotApiError("Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return markup
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise BotApiError(
            "Bad Request: can't parse inline keyboard button: InlineKeyboardButton must be an object"
        )
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not button.get("text"):
            raise BotApiError("Bad Request: can't parse inline keyboard button: Text buttons are unallowed")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
            raise BotApiError("Bad Request: BUTTON_DATA_INVALID")
    return markup if rows else None


def message_text(text: str, parse_mode: Any) -> str:
    """What Telegram shows: HTML tags are formatting (entities), not text."""
    if parse_mode == "HTML":
        return html.unescape(_TAG.sub("", text))
    return text


def caption_param(params: Json) -> Json:
    """The message's `caption` field as Telegram shows it, or nothing when there is no caption."""
    caption = params.get("caption")
    if not caption:
        return {}
    text = message_text(str(caption), params.get("parse_mode"))
    if len(text) > MAX_CAPTION_LENGTH:
        raise BotApiError("Bad Request: message caption is too long")
    return {"caption": text}


def checked_text(params: Json) -> str:
    """A message's text as Telegram shows it, refused when empty or too long."""
    text = message_text(str_param(params, "text", ""), params.get("parse_mode"))
    if not text.strip():
        raise BotApiError("Bad Request: message text is empty")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise BotApiError("Bad Request: message is too long")
    return text
