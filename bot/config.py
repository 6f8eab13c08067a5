"""What the bot is configured with: plain, typed values handed down by the composition root
(`photobot.wiring`), so no part of `bot` reads settings or the environment itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TELEGRAM_API_DEFAULT = "https://api.telegram.org"


@dataclass(frozen=True)
class BotConfig:
    token: str = field(repr=False)  # never in a repr, a log line or an exception
    api_url: str = TELEGRAM_API_DEFAULT  # root of a Bot API server: {root}/bot{token}/{method}
    admin_ids: frozenset[int] = frozenset()
    data_dir: Path = Path("var")  # where reports are read from and temporary files go
    max_image_bytes: int = 20 * 1024 * 1024  # Telegram's own download limit for bots
    user_photos_per_minute: int = 20  # per-user flood limit for photos; 0 turns it off
    user_updates_per_minute: int = 30  # per-user limit for every update; 0 turns it off
    outgoing_messages_per_s: float = 30.0  # Telegram's overall limit for a bot's messages; 0: off


@dataclass(frozen=True)
class RetrainConfig:
    """How the bot starts a retrain job: the job reads its own settings from `environment`, which the
    composition root builds without the bot token or any other secret."""

    data_dir: Path
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
