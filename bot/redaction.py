"""Keep the bot token out of every text that leaves the process: exceptions, log lines, tracebacks.

The token is the bot's whole identity: whoever reads it can take the bot over. It sits in every Bot API
URL (`{root}/bot<TOKEN>/getMe`, files under `{root}/file/bot<TOKEN>/…`), so any error text that quotes
a URL, and python-telegram-bot's own "The token `…` was rejected", would carry it into logs. The code
that raises such errors redacts them itself (`bot.transport`, `photobot run`); the `RedactingFilter`
installed on the root logger's handlers at start-up is the last line of defence for whatever slips by.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "<redacted>"
# `bot` + a bot id + `:` (or its URL encoding) + the secret: any bot's token as it appears in a URL.
_TOKEN_IN_URL = re.compile(r"bot\d+(?::|%3[aA])[A-Za-z0-9_-]+")
# The path segment after `/bot` in a Bot API URL, whatever the token looks like.
_URL_SEGMENT = re.compile(r"/bot[^/?#\s'\"]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` and every `bot<digits>:<secret>` replaced by a placeholder."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _TOKEN_IN_URL.sub(f"bot{REDACTED}", text)


def redact_url(url: str, text: str) -> str:
    """`text` with the Bot API `url` (and any other `bot<token>` path segment) made safe to log."""
    safe = _URL_SEGMENT.sub(f"/bot{REDACTED}", url)
    return redact(_URL_SEGMENT.sub(f"/bot{REDACTED}", text.replace(url, safe)))


class RedactingFilter(logging.Filter):
    """Redact the secrets from a record's message, its arguments and its formatted traceback.

    A handler's filter sees every record the handler emits, including those propagated from other
    loggers (python-telegram-bot's, aiohttp's), which a logger's own filter would not.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact(message, self.secrets)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            # The formatter would format the traceback later, with every chained cause's text: do it
            # now, redacted; formatters reuse `exc_text` once it is set.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install(secrets: Iterable[str], logger: logging.Logger | None = None) -> RedactingFilter:
    """Put a `RedactingFilter` on every handler of `logger` (the root logger by default)."""
    found = RedactingFilter(secrets)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(found)
    return found
