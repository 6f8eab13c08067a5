"""Everything the bot says, in English and Russian, chosen by Telegram's `language_code`.

`text(lang, key, **values)` formats one message; unknown languages fall back to English. Labels are
never translated: the answer names them exactly as the model does (`7`, `tulips`). The messages
themselves live one language to a module (`en.py`, `ru.py`); a new key goes into both.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Final

from bot.texts.en import EN
from bot.texts.ru import RU

DEFAULT: Final = "en"

TEXTS: Final[dict[str, dict[str, str]]] = {"en": EN, "ru": RU}

COMMANDS: Final[dict[str, list[tuple[str, str]]]] = {
    "en": [
        ("help", "what I do"),
        ("digit", "read photos as digits"),
        ("flower", "read photos as flowers"),
        ("auto", "decide by myself"),
        ("use", "read photos with a model taught here"),
        ("stats", "your numbers"),
        ("forget", "delete your data"),
    ],
    "ru": [
        ("help", "что я умею"),
        ("digit", "читать фото как цифры"),
        ("flower", "читать фото как цветы"),
        ("auto", "решать самому"),
        ("use", "читать фото обученной здесь моделью"),
        ("stats", "ваша статистика"),
        ("forget", "удалить ваши данные"),
    ],
}


def language(code: str | None) -> str:
    """Our language for Telegram's IETF `language_code` (`ru`, `ru-RU`, `en-GB`, None)."""
    base = (code or "").split("-")[0].lower()
    return base if base in TEXTS else DEFAULT


def text(lang: str, key: str, **values: object) -> str:
    template = TEXTS.get(lang, TEXTS[DEFAULT]).get(key) or TEXTS[DEFAULT][key]
    return template.format(**values)


def percent(fraction: float) -> int:
    """A confidence in whole percent, never showing 100% for an answer that is not certain."""
    value = round(fraction * 100)
    return 99 if value == 100 and fraction < 1.0 else value


def human_size(size: int) -> str:
    amount: float = size
    for unit in ("bytes", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount} bytes"


def quoted(caption: str | None, limit: int = 40) -> str:
    """A person's caption as the bot repeats it, cut to `limit` characters and without invisible
    control and formatting characters: a right-to-left override, cut off from its end, would turn the
    rest of the bot's own sentence around."""
    visible = "".join(c for c in caption or "" if unicodedata.category(c) not in ("Cc", "Cf"))
    return visible.strip()[:limit]


def usage(lang: str, key: str, given: str | None, known: Iterable[str], **values: object) -> str:
    """A command's usage line (`key`), after "There is no model X" when the name `given` is none of the
    `known` models: a typo is said as one, not only answered with the rules."""
    line = text(lang, key, **values)
    if given and given not in set(known):
        return text(lang, "no_such_model", name=quoted(given, 30)) + "\n" + line
    return line
