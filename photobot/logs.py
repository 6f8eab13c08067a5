"""Where the processes' logs go and how they look: LOG_LEVEL, and LOG_FORMAT `text` or `json`.

`text` (the default) is for people: `time LEVEL logger: message`. `json` is for log collectors (Loki,
Elasticsearch, journald's JSON export): one object per line with `time` (UTC, ISO 8601), `level`,
`logger`, `message`, and `exception` (the traceback) and `stack` when the record has them.

The token filter (`bot.redaction.RedactingFilter`, put on the root handlers by `photobot run`) works
on the record before any formatter sees it: it rewrites the message and formats the traceback into
`exc_text` redacted. `JsonFormatter` takes that `exc_text` as it is, as logging's own formatter does,
and never formats the traceback again from the exception.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside the message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: int | str, log_format: str = "text") -> None:
    """One handler on stderr for the root logger, in LOG_FORMAT's shape."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
