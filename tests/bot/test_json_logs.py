"""LOG_FORMAT=json: one JSON object per log line (time, level, logger, message, exception), with the token
redacted as in text logs; and `photobot run` as an operator runs it with JSON logs and METRICS_PORT,
scraped after a photo and a tap."""

from __future__ import annotations

import io
import json
import logging
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from bot.playground.bot_api_server import BotApiServer
from bot.redaction import REDACTED, RedactingFilter
from inference.model_store import ModelStore
from photobot.logs import JsonFormatter
from tests.bot.test_metrics import free_port, scrape, value
from tests.support.bot import TOKEN, button_data, buttons, digit_photo
from tests.support.processes import photobot_env, photobot_process, stop, wait_until

KEYS = {"time", "level", "logger", "message"}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_record_and_its_traceback_with_the_token_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter([TOKEN]))
    logger = logging.getLogger("tests.json_logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("token %s in an argument,\nand a second line", TOKEN)
        try:
            try:
                raise ValueError(f"GET http://api/bot{TOKEN}/getFile failed")
            except ValueError as cause:
                raise RuntimeError(f"the call with {TOKEN} failed") from cause
        except RuntimeError:
            logger.exception("Error while handling an update")
        logger.info("plain: ünïcode stays as it is")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    output = stream.getvalue()
    assert TOKEN not in output and "bot-under-test" not in output, output
    first, failed, plain = json_lines(output)  # three records, three lines
    assert set(first) == KEYS and set(plain) == KEYS
    assert first["level"] == "WARNING" and first["logger"] == "tests.json_logs"
    assert first["message"] == f"token {REDACTED} in an argument,\nand a second line"
    assert datetime.fromisoformat(first["time"]).utcoffset().total_seconds() == 0
    assert failed["message"] == "Error while handling an update" and failed["level"] == "ERROR"
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: GET http://api/bot<redacted>/getFile failed" in failed["exception"]
    assert f"RuntimeError: the call with {REDACTED} failed" in failed["exception"]
    assert plain["message"] == "plain: ünïcode stays as it is"


@pytest.mark.process
async def test_photobot_run_logs_json_lines_and_serves_its_metrics(
    tmp_path: Path, model_dir: Path, glyphs
) -> None:
    shutil.copytree(model_dir, tmp_path / "data" / "models")
    port = free_port()
    async with BotApiServer(TOKEN) as server:
        env = photobot_env(
            server.url,
            tmp_path / "data",
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
            METRICS_PORT=str(port),
            # Keras serves at once: a LiteRT conversion still running in its thread at SIGTERM (a first
            # start) is waited for before the process exits, which is not what this test is about.
            ENGINE_RUNTIME="keras",
        )
        async with photobot_process("run", env=env, log=tmp_path / "bot.log", cwd=tmp_path) as process:
            await wait_until(lambda: server.method_calls.get("getUpdates", 0) > 0, 180, "the bot to poll")
            user = server.add_user(8101, "Jo")["id"]
            await server.send_photo(user, digit_photo(glyphs[4], seed=4))
            event = await server.wait_for(
                user, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], timeout=60
            )
            reply = event["message"]
            assert [text for text, _ in buttons(reply)] == ["✅ Correct", "❌ Wrong"], reply["text"]
            await server.press_button(user, reply["message_id"], button_data(reply, "✅ Correct"), check=True)
            await server.wait_for(user, lambda e: e["type"] == "callback_answer", timeout=60)

            samples = await scrape(port)
            code = await stop(process)
    output = (tmp_path / "bot.log").read_text()
    assert code == 0, output
    assert sum(v for (name, _), v in samples.items() if name == "photobot_photos_answered_total") == 1
    assert value(samples, "photobot_feedback_total", outcome="correct") == 1
    serving = ModelStore(tmp_path / "data" / "models").active_version("digits")
    assert value(samples, "photobot_model_version", model="digits") == serving

    assert TOKEN not in output and "bot-under-test" not in output
    records = json_lines(output)
    assert all(set(record) >= KEYS for record in records)
    messages = [record["message"] for record in records]
    assert f"Prometheus metrics on http://127.0.0.1:{port}/metrics" in messages
    assert any(m.startswith("PhotoBot started as @") for m in messages)
    assert messages[-1] == "PhotoBot stopped"
