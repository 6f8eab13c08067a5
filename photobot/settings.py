"""One settings object, read from the environment and `.env` in one place, then passed down.

`inference` and `storage` never import this module: they receive plain values from their callers
(the engine its own `EngineConfig`, which is what `Settings.engine` holds).
Every variable is listed with its default in `.env.example`; keep the two in step.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bot.config import TELEGRAM_API_DEFAULT, ApiTimeouts
from inference.engine import EngineConfig
from inference.remote.config import RemoteConfig, ServeConfig

T = TypeVar("T", int, float)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # as the error names them


class SettingsError(ValueError):
    """A variable has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Left out of repr: a logged Settings (or a RetrainRunner holding one) must not quote the token.
    telegram_bot_token: str | None = field(default=None, repr=False)
    telegram_api_url: str = TELEGRAM_API_DEFAULT  # root of a Bot API server: {root}/bot{token}/{method}
    bot_api_timeouts: ApiTimeouts = field(default_factory=ApiTimeouts)  # seconds per Bot API call
    webhook_url: str | None = None  # public URL; when set the bot uses a webhook instead of long polling
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    # The secret Telegram sends with every webhook call (X-Telegram-Bot-Api-Secret-Token); None: one
    # derived from the token. Every replica must have the same. Left out of repr.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_max_connections: int = 40  # Telegram's concurrent webhook calls (setWebhook, 1 to 100)
    webhook_answer_within_s: float = 50.0  # a webhook call is answered by then; Telegram waits 60 s
    webhook_lease_s: float = 15.0  # a replica silent this long loses the updates it held to the others
    admin_ids: frozenset[int] = frozenset()
    data_dir: Path = Path("var")
    # postgresql://USER:PASSWORD@HOST:PORT/DATABASE for a database several machines share; None: the SQLite
    # file under data_dir. Left out of repr: it may hold a password.
    database_url: str | None = field(default=None, repr=False)
    datasets: tuple[Path, ...] = ()  # folders searched for mnist.npz and flower_photos/ (never downloaded)
    keras_backend: str = "tensorflow"
    log_level: str = "INFO"
    log_format: str = "text"  # "json": one JSON object per log line, for log collectors (photobot.logs)
    # Prometheus metrics at http://METRICS_LISTEN:METRICS_PORT/metrics (photobot.metrics); 0: none. Off by
    # default: every process on a host needs its own port (bot replicas, the worker, a Ray node).
    metrics_listen: str = "127.0.0.1"
    metrics_port: int = 0
    engine: EngineConfig = field(default_factory=EngineConfig)  # the inference engine's knobs
    # The Ray Serve application (`photobot serve inference`) the bot asks instead of its own engine when
    # set: http://HOST:PORT of Ray Serve's proxy. None: the engine runs in the bot's process.
    inference_url: str | None = None
    inference_timeout_s: float = 12.0  # per try (one retry); above ENGINE_DEADLINE_S, see RemoteConfig
    serve: ServeConfig = field(default_factory=ServeConfig)  # `photobot serve inference`'s knobs
    max_image_bytes: int = 20 * 1024 * 1024  # Telegram's own download limit for bots
    # Pixels a JPEG may declare (it is decoded at 1/2 to 1/8 scale: a 108 MP phone photo reads at 1.7 MP);
    # other formats decode at full size and stop at inference.decode.MAX_FULL_PIXELS (16 MP).
    max_image_pixels: int = 110_000_000
    user_photos_per_minute: int = 20  # per-user flood limit for incoming photos; 0 turns it off
    user_updates_per_minute: int = 30  # per-user limit for every update (texts, files, buttons); 0: off
    outgoing_messages_per_s: float = 30.0  # Telegram's overall limit for a bot's messages; 0 turns it off
    retrain_min_new_labels: int = 20  # fewer new labelled photos since the last promotion: nothing to do
    retrain_max_labels_per_user: int = 200  # cap on one contributor's photos in a retraining set
    # No one person may be more than this share of the chat photos a retrain uses (so at least
    # 1/share people are needed), and chat photos count only once this many people gave them.
    retrain_max_user_share: float = 0.25
    retrain_min_contributors: int = 4
    retrain_gate_margin: float = 0.3  # accuracy points a candidate may lose on the base test set
    # Who runs the jobs /retrain queues: "embedded" (the bot starts each as its own process) or
    # "external" (the bot only queues; `photobot worker` processes claim them, one per model at a time).
    retrain_workers: str = "embedded"
    retrain_lease_s: float = 60.0  # a worker silent this long is taken for dead: its job is failed

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def database_path(self) -> Path:
        """The SQLite file, used when DATABASE_URL is not set."""
        return self.data_dir / "photobot.sqlite3"

    @property
    def database(self) -> Path | str:
        """What storage opens: DATABASE_URL when it is set, else the SQLite file under DATA_DIR."""
        return self.database_url or self.database_path

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def remote(self) -> RemoteConfig | None:
        """How the bot reaches the inference service; None: the engine runs in the bot's process."""
        if self.inference_url is None:
            return None
        return RemoteConfig(
            self.inference_url, self.inference_timeout_s, status_poll_s=self.engine.reload_poll_s or 2.0
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> Settings:
        """Read settings from `.env` (if present) overlaid by the real environment."""
        values = dict(read_dotenv(dotenv)) if dotenv is not None and dotenv.is_file() else {}
        values.update(os.environ if env is None else env)
        return cls._from_mapping(values)

    @classmethod
    def _from_mapping(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        defaults = cls()
        engine_defaults = EngineConfig()
        serve_defaults = ServeConfig()
        timeouts = ApiTimeouts()
        return cls(
            telegram_bot_token=get("TELEGRAM_BOT_TOKEN"),
            telegram_api_url=(get("TELEGRAM_API_URL") or TELEGRAM_API_DEFAULT).rstrip("/"),
            bot_api_timeouts=ApiTimeouts(
                read_s=_positive(
                    "BOT_API_READ_TIMEOUT_S", _number(env, "BOT_API_READ_TIMEOUT_S", timeouts.read_s, float)
                ),
                write_s=_positive(
                    "BOT_API_WRITE_TIMEOUT_S",
                    _number(env, "BOT_API_WRITE_TIMEOUT_S", timeouts.write_s, float),
                ),
                connect_s=_positive(
                    "BOT_API_CONNECT_TIMEOUT_S",
                    _number(env, "BOT_API_CONNECT_TIMEOUT_S", timeouts.connect_s, float),
                ),
                pool_s=_positive(
                    "BOT_API_POOL_TIMEOUT_S", _number(env, "BOT_API_POOL_TIMEOUT_S", timeouts.pool_s, float)
                ),
                media_write_s=_positive(
                    "BOT_API_MEDIA_WRITE_TIMEOUT_S",
                    _number(env, "BOT_API_MEDIA_WRITE_TIMEOUT_S", timeouts.media_write_s, float),
                ),
            ),
            webhook_url=get("WEBHOOK_URL"),
            webhook_listen=get("WEBHOOK_LISTEN") or defaults.webhook_listen,
            webhook_port=_tcp_port("WEBHOOK_PORT", _number(env, "WEBHOOK_PORT", defaults.webhook_port, int)),
            webhook_secret=_webhook_secret(get("WEBHOOK_SECRET")),
            webhook_max_connections=_between(
                "WEBHOOK_MAX_CONNECTIONS",
                _number(env, "WEBHOOK_MAX_CONNECTIONS", defaults.webhook_max_connections, int),
                1,
                100,
            ),
            webhook_answer_within_s=_between(
                "WEBHOOK_ANSWER_WITHIN_S",
                _number(env, "WEBHOOK_ANSWER_WITHIN_S", defaults.webhook_answer_within_s, float),
                1,
                59,
            ),
            webhook_lease_s=_between(
                "WEBHOOK_LEASE_S", _number(env, "WEBHOOK_LEASE_S", defaults.webhook_lease_s, float), 1, 3600
            ),
            admin_ids=_id_set(env, "ADMIN_IDS"),
            data_dir=Path(get("DATA_DIR") or defaults.data_dir),
            database_url=_database_url(get("DATABASE_URL")),
            datasets=tuple(Path(p) for p in (get("PHOTOBOT_DATASETS") or "").split(os.pathsep) if p),
            keras_backend=get("KERAS_BACKEND") or defaults.keras_backend,
            log_level=_log_level(get("LOG_LEVEL") or defaults.log_level),
            log_format=_choice(env, "LOG_FORMAT", defaults.log_format, ("text", "json")),
            metrics_listen=get("METRICS_LISTEN") or defaults.metrics_listen,
            metrics_port=_port("METRICS_PORT", _number(env, "METRICS_PORT", defaults.metrics_port, int)),
            engine=EngineConfig(
                max_batch=_positive(
                    "ENGINE_MAX_BATCH", _number(env, "ENGINE_MAX_BATCH", engine_defaults.max_batch, int)
                ),
                max_wait_ms=_number(env, "ENGINE_MAX_WAIT_MS", engine_defaults.max_wait_ms, float),
                queue_size=_positive(
                    "ENGINE_QUEUE_SIZE", _number(env, "ENGINE_QUEUE_SIZE", engine_defaults.queue_size, int)
                ),
                deadline_s=_positive(
                    "ENGINE_DEADLINE_S", _number(env, "ENGINE_DEADLINE_S", engine_defaults.deadline_s, float)
                ),
                workers=_number(env, "ENGINE_WORKERS", engine_defaults.workers, int),
                reload_poll_s=_number(env, "ENGINE_RELOAD_POLL_S", engine_defaults.reload_poll_s, float),
                pool=_choice(env, "ENGINE_POOL", engine_defaults.pool, ("thread", "process")),
                runtime=_choice(env, "ENGINE_RUNTIME", engine_defaults.runtime, ("auto", "keras", "lite")),
                decode_memory_mb=_number(env, "DECODE_MEMORY_MB", engine_defaults.decode_memory_mb, int),
            ),
            inference_url=_http_url("INFERENCE_URL", get("INFERENCE_URL")),
            inference_timeout_s=_positive(
                "INFERENCE_TIMEOUT_S",
                _number(env, "INFERENCE_TIMEOUT_S", defaults.inference_timeout_s, float),
            ),
            serve=ServeConfig(
                host=get("SERVE_HOST") or serve_defaults.host,
                port=_tcp_port("SERVE_PORT", _number(env, "SERVE_PORT", serve_defaults.port, int)),
                max_batch=_positive(
                    "SERVE_MAX_BATCH", _number(env, "SERVE_MAX_BATCH", serve_defaults.max_batch, int)
                ),
                batch_wait_ms=_number(env, "SERVE_BATCH_WAIT_MS", serve_defaults.batch_wait_ms, float),
                min_replicas=_number(env, "SERVE_MIN_REPLICAS", serve_defaults.min_replicas, int),
                max_replicas=_positive(
                    "SERVE_MAX_REPLICAS",
                    _number(env, "SERVE_MAX_REPLICAS", serve_defaults.max_replicas, int),
                ),
                target_ongoing_requests=_positive(
                    "SERVE_TARGET_ONGOING_REQUESTS",
                    _number(
                        env, "SERVE_TARGET_ONGOING_REQUESTS", serve_defaults.target_ongoing_requests, float
                    ),
                ),
                cpus_per_replica=_number(
                    env, "SERVE_CPUS_PER_REPLICA", serve_defaults.cpus_per_replica, float
                ),
                gpus_per_replica=_optional_float("SERVE_GPUS_PER_REPLICA", get("SERVE_GPUS_PER_REPLICA")),
            ),
            max_image_bytes=_positive(
                "MAX_IMAGE_BYTES", _number(env, "MAX_IMAGE_BYTES", defaults.max_image_bytes, int)
            ),
            max_image_pixels=_positive(
                "MAX_IMAGE_PIXELS", _number(env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels, int)
            ),
            user_photos_per_minute=_number(
                env, "USER_PHOTOS_PER_MINUTE", defaults.user_photos_per_minute, int
            ),
            user_updates_per_minute=_number(
                env, "USER_UPDATES_PER_MINUTE", defaults.user_updates_per_minute, int
            ),
            outgoing_messages_per_s=_number(
                env, "OUTGOING_MESSAGES_PER_S", defaults.outgoing_messages_per_s, float
            ),
            retrain_min_new_labels=_number(
                env, "RETRAIN_MIN_NEW_LABELS", defaults.retrain_min_new_labels, int
            ),
            retrain_max_labels_per_user=_positive(
                "RETRAIN_MAX_LABELS_PER_USER",
                _number(env, "RETRAIN_MAX_LABELS_PER_USER", defaults.retrain_max_labels_per_user, int),
            ),
            retrain_max_user_share=_fraction(env, "RETRAIN_MAX_USER_SHARE", defaults.retrain_max_user_share),
            retrain_min_contributors=_number(
                env, "RETRAIN_MIN_CONTRIBUTORS", defaults.retrain_min_contributors, int
            ),
            retrain_gate_margin=_number(env, "RETRAIN_GATE_MARGIN", defaults.retrain_gate_margin, float),
            retrain_workers=_choice(
                env, "RETRAIN_WORKERS", defaults.retrain_workers, ("embedded", "external")
            ),
            retrain_lease_s=_positive(
                "RETRAIN_LEASE_S", _number(env, "RETRAIN_LEASE_S", defaults.retrain_lease_s, float)
            ),
        )


def _database_url(value: str | None) -> str | None:
    """DATABASE_URL names a PostgreSQL database, or nothing (its value is never quoted: a password)."""
    if value is None:
        return None
    if value.split("://", 1)[0].lower() not in ("postgresql", "postgres") or "://" not in value:
        raise SettingsError(
            "DATABASE_URL must be a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
            "(leave it empty for the SQLite file under DATA_DIR)"
        )
    return value


def _http_url(name: str, value: str | None) -> str | None:
    """An http(s):// URL without its trailing slash, or nothing."""
    if value is None:
        return None
    if not value.lower().startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _webhook_secret(value: str | None) -> str | None:
    """Telegram's rule for a webhook's secret_token: 1 to 256 of A-Z, a-z, 0-9, _ and - (never quoted)."""
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
        raise SettingsError("WEBHOOK_SECRET must be 1 to 256 letters, digits, _ or - (Telegram's rule)")
    return value


def _between(name: str, value: T, low: T, high: T) -> T:
    if not low <= value <= high:
        raise SettingsError(f"{name} must be from {low} to {high}, got {value!r}")
    return value


def _optional_float(name: str, value: str | None) -> float | None:
    """A number that may be left empty (None: chosen at run time)."""
    return None if value is None else _not_negative(name, value, float, "a number or empty")


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: `KEY=VALUE` lines, `#` comments, optional quotes, `export ` prefixes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def _number(env: Mapping[str, str], name: str, default: T, kind: type[T]) -> T:
    raw = env.get(name, "").strip()
    return _not_negative(name, raw, kind, f"a {kind.__name__}") if raw else default


def _not_negative(name: str, raw: str, kind: type[T], what: str) -> T:
    """`raw` read as a `kind` of at least 0; `what` names that kind in the error."""
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not math.isfinite(value):
        # float() reads "nan" and "inf": no count, limit or duration means either (a NaN deadline or
        # timeout fails every photo), and the checks below would let NaN through.
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    """A share such as 0.25: above 0 (0 would leave nothing to use) and at most 1 (everything); text,
    NaN and infinity are no share either, and get the same answer."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # False for NaN too
        raise SettingsError(f"{name} must be a fraction above 0 and at most 1 (0.25 = 25%), got {raw!r}")
    return value


def _positive(name: str, value: T) -> T:
    if not value > 0:
        raise SettingsError(f"{name} must be above 0, got {value!r}")
    return value


def _tcp_port(name: str, value: int) -> int:
    """A TCP port something listens on for others (Telegram, the bot): 0 would be a random one."""
    return _between(name, value, 1, 65535)


def _log_level(value: str) -> str:
    """One of logging's level names (basicConfig raises on any other; left unchecked it was ignored)."""
    level = value.upper()
    if level not in logging.getLevelNamesMapping():
        names = ", ".join(LOG_LEVELS)
        raise SettingsError(f"LOG_LEVEL must be one of {names}, got {value!r}")
    return level


def _port(name: str, value: int) -> int:
    """A TCP port, or 0 for none."""
    if value > 65535:
        raise SettingsError(f"{name} must be a TCP port (1 to 65535) or 0 for none, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _id_set(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = env.get(name, "")
    parts = [p for p in raw.replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        return frozenset(int(p) for p in parts)
    except ValueError:
        raise SettingsError(f"{name} must be Telegram user ids separated by commas, got {raw!r}") from None
