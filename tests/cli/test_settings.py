"""The one settings object: environment over `.env`, every variable documented in `.env.example`."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from bot.config import ApiTimeouts
from bot.transport import AiohttpRequest
from inference.engine import EngineConfig
from photobot import settings as settings_module
from photobot.settings import Settings, SettingsError, read_dotenv
from photobot.wiring import build_bot
from tests.support import REPO

EXAMPLE = REPO / ".env.example"


def test_env_example_lists_every_variable_with_its_default():
    example = read_dotenv(EXAMPLE)
    assert Settings._from_mapping(example) == Settings()
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    read_by_code = set(
        re.findall(r'(?:get|_number|_fraction|_choice|_id_set)\(\s*(?:env,\s*)?"([A-Z][A-Z0-9_]+)"', source)
    )
    assert read_by_code == set(example)


def test_the_environment_overrides_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# a comment\n"
        "export TELEGRAM_BOT_TOKEN='123:abc'\n"
        'ADMIN_IDS="1, 2;3"\n'
        "ENGINE_MAX_BATCH=32  # inline comment\n"
        "LOG_LEVEL=debug\n"
        "DATA_DIR=from-dotenv\n",
        encoding="utf-8",
    )
    settings = Settings.from_env({"DATA_DIR": "from-env", "PHOTOBOT_DATASETS": "a:b"}, dotenv)
    assert settings.telegram_bot_token == "123:abc"
    assert settings.admin_ids == frozenset({1, 2, 3})
    assert settings.engine == dataclasses.replace(EngineConfig(), max_batch=32)
    assert settings.log_level == "DEBUG"
    assert settings.data_dir == Path("from-env")
    assert settings.database_path == Path("from-env/photobot.sqlite3")
    assert settings.datasets == (Path("a"), Path("b"))


def test_a_missing_dotenv_means_defaults():
    assert Settings.from_env({}, Path("/nonexistent/.env")) == Settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ENGINE_MAX_BATCH", "many", "ENGINE_MAX_BATCH must be a int"),
        ("MAX_IMAGE_BYTES", "-1", "must not be negative"),
        ("ENGINE_POOL", "fork", "ENGINE_POOL must be one of thread, process"),
        ("ENGINE_RUNTIME", "onnx", "ENGINE_RUNTIME must be one of auto, keras, lite"),
        ("ADMIN_IDS", "12,alice", "ADMIN_IDS must be Telegram user ids"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of text, json"),
        ("METRICS_PORT", "70000", "METRICS_PORT must be a TCP port"),
        ("WEBHOOK_SECRET", "not secret!", "WEBHOOK_SECRET must be 1 to 256 letters, digits, _ or -"),
        ("WEBHOOK_MAX_CONNECTIONS", "101", "WEBHOOK_MAX_CONNECTIONS must be from 1 to 100"),
        ("WEBHOOK_ANSWER_WITHIN_S", "60", "WEBHOOK_ANSWER_WITHIN_S must be from 1 to 59"),
        ("BOT_API_READ_TIMEOUT_S", "0", "BOT_API_READ_TIMEOUT_S must be above 0"),
        ("BOT_API_POOL_TIMEOUT_S", "soon", "BOT_API_POOL_TIMEOUT_S must be a float"),
        ("ENGINE_DEADLINE_S", "0", "ENGINE_DEADLINE_S must be above 0"),
        ("ENGINE_DEADLINE_S", "nan", "ENGINE_DEADLINE_S must be a finite number"),
        ("ENGINE_DEADLINE_S", "inf", "ENGINE_DEADLINE_S must be a finite number"),
        ("ENGINE_QUEUE_SIZE", "0", "ENGINE_QUEUE_SIZE must be above 0"),
        ("ENGINE_MAX_BATCH", "0", "ENGINE_MAX_BATCH must be above 0"),
        ("ENGINE_MAX_WAIT_MS", "NaN", "ENGINE_MAX_WAIT_MS must be a finite number"),
        ("ENGINE_RELOAD_POLL_S", "infinity", "ENGINE_RELOAD_POLL_S must be a finite number"),
        ("INFERENCE_TIMEOUT_S", "0", "INFERENCE_TIMEOUT_S must be above 0"),
        ("BOT_API_READ_TIMEOUT_S", "inf", "BOT_API_READ_TIMEOUT_S must be a finite number"),
        ("WEBHOOK_LEASE_S", "nan", "WEBHOOK_LEASE_S must be a finite number"),
        ("WEBHOOK_PORT", "0", "WEBHOOK_PORT must be from 1 to 65535"),
        ("SERVE_PORT", "65536", "SERVE_PORT must be from 1 to 65535"),
        ("SERVE_MAX_BATCH", "0", "SERVE_MAX_BATCH must be above 0"),
        ("SERVE_MAX_REPLICAS", "0", "SERVE_MAX_REPLICAS must be above 0"),
        ("SERVE_TARGET_ONGOING_REQUESTS", "0", "SERVE_TARGET_ONGOING_REQUESTS must be above 0"),
        ("SERVE_CPUS_PER_REPLICA", "inf", "SERVE_CPUS_PER_REPLICA must be a finite number"),
        ("SERVE_GPUS_PER_REPLICA", "nan", "SERVE_GPUS_PER_REPLICA must be a finite number"),
        ("MAX_IMAGE_BYTES", "0", "MAX_IMAGE_BYTES must be above 0"),
        ("MAX_IMAGE_PIXELS", "0", "MAX_IMAGE_PIXELS must be above 0"),
        ("OUTGOING_MESSAGES_PER_S", "inf", "OUTGOING_MESSAGES_PER_S must be a finite number"),
        ("RETRAIN_MAX_LABELS_PER_USER", "0", "RETRAIN_MAX_LABELS_PER_USER must be above 0"),
        ("RETRAIN_MAX_USER_SHARE", "inf", "RETRAIN_MAX_USER_SHARE must be a fraction above 0 and at most 1"),
        ("RETRAIN_GATE_MARGIN", "inf", "RETRAIN_GATE_MARGIN must be a finite number"),
        ("RETRAIN_LEASE_S", "nan", "RETRAIN_LEASE_S must be a finite number"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value}, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # 0 means "off", "none" or "one per core" for these (see .env.example): it stays allowed.
        ("ENGINE_WORKERS", "0"),
        ("ENGINE_RELOAD_POLL_S", "0"),
        ("ENGINE_MAX_WAIT_MS", "0"),
        ("DECODE_MEMORY_MB", "0"),
        ("METRICS_PORT", "0"),
        ("USER_PHOTOS_PER_MINUTE", "0"),
        ("USER_UPDATES_PER_MINUTE", "0"),
        ("OUTGOING_MESSAGES_PER_S", "0"),
        ("SERVE_MIN_REPLICAS", "0"),
        ("SERVE_GPUS_PER_REPLICA", "0"),
        ("RETRAIN_GATE_MARGIN", "0"),
        ("LOG_LEVEL", "warn"),
    ],
)
def test_zero_where_it_means_off_and_logging_level_aliases_are_kept(name, value):
    Settings.from_env({name: value}, None)


@pytest.mark.parametrize(
    ("name", "value", "argv"),
    [
        ("ENGINE_DEADLINE_S", "nan", ["models", "list"]),
        ("LOG_LEVEL", "LOUD", ["models", "list"]),
        ("LOG_LEVEL", "LOUD", ["--verbose", "models", "list"]),  # basicConfig raised on it
    ],
)
def test_a_bad_setting_stops_the_command_line_with_one_line(name, value, argv, tmp_path, monkeypatch, capsys):
    from photobot.cli import main

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv(name, value)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"photobot: configuration error: {name} must be ")
    assert len(captured.err.splitlines()) == 1
    assert not (tmp_path / "var").exists()  # stopped before the command did anything


def test_bot_api_timeouts_reach_the_bots_requests():
    """BOT_API_*_TIMEOUT_S are the bot's: its Bot API calls and its getUpdates use them."""
    settings = Settings.from_env(
        {
            "TELEGRAM_BOT_TOKEN": "123:abc",
            "BOT_API_READ_TIMEOUT_S": "2.5",
            "BOT_API_WRITE_TIMEOUT_S": "3",
            "BOT_API_CONNECT_TIMEOUT_S": "0.5",
            "BOT_API_POOL_TIMEOUT_S": "0.25",
            "BOT_API_MEDIA_WRITE_TIMEOUT_S": "40",
        },
        None,
    )
    assert settings.bot_api_timeouts == ApiTimeouts(
        read_s=2.5, write_s=3.0, connect_s=0.5, pool_s=0.25, media_write_s=40.0
    )
    application = build_bot(settings)
    for request in application.bot._request:  # python-telegram-bot's pair: getUpdates', everything else's
        assert isinstance(request, AiohttpRequest)
        assert request._timeouts == {
            "read": 2.5,
            "write": 3.0,
            "connect": 0.5,
            "pool": 0.25,
            "media_write": 40.0,
        }


def test_a_malformed_dotenv_line_names_file_and_line(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("LOG_LEVEL=INFO\nthis is not a setting\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"\.env:2: expected KEY=VALUE"):
        read_dotenv(dotenv)


def test_serving_thread_layout_one_intra_op_thread_in_the_bot_only(monkeypatch):
    from photobot.serving import use_serving_threads

    for name in ("TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    use_serving_threads()
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "1"
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ  # the engine alone keeps one per core
    use_serving_threads(in_bot=True)
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "4")
    use_serving_threads(in_bot=True)
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "4"  # what the operator set stands
