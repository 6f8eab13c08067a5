"""`photobot run` at start: a rejected token and an unreachable Bot API are a few clear lines, no traceback.

Real processes against 127.0.0.1: the fake Bot API server (a token it rejects) and a port nobody
listens on (the network down).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.playground.bot_api_server import BotApiServer
from photobot.commands.run import backoff_delays
from tests.support.bot import TOKEN

WRONG_TOKEN = "123456:rejected-by-the-server"


def run_bot(tmp_path: Path, token: str, api_url: str, *extra: str) -> subprocess.CompletedProcess:
    """`photobot run` in its own process with the default log level; what it printed, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(TELEGRAM_BOT_TOKEN=token, TELEGRAM_API_URL=api_url, DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "photobot", "run", *extra],
        env=env,
        cwd=tmp_path,  # no .env of the checkout
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_backoff_doubles_from_one_second_up_to_a_minute():
    assert backoff_delays(9) == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_delays(0) == []


@pytest.mark.process
def test_unreachable_bot_api_is_retried_with_backoff_and_ends_with_the_proxy_hint(tmp_path):
    port = free_port()
    done = run_bot(tmp_path, TOKEN, f"http://127.0.0.1:{port}", "--max-retries", "2")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    assert TOKEN not in output, output
    lines = output.strip().splitlines()
    tries = [line for line in lines if "could not be reached" in line]
    assert len(tries) == 3, output  # the first try and two retries, one line each
    assert tries[0].endswith("try 1 of 3, next in 1 s") and tries[1].endswith("try 2 of 3, next in 2 s")
    assert lines[-1].startswith(f"photobot run: the Bot API at http://127.0.0.1:{port} could not be reached")
    assert "HTTPS_PROXY" in lines[-1]
    assert len(lines) == 3, output


@pytest.mark.process
async def test_a_rejected_token_is_one_line_and_not_retried(tmp_path):
    async with BotApiServer(TOKEN) as server:
        import asyncio

        done = await asyncio.to_thread(run_bot, tmp_path, WRONG_TOKEN, server.url)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert output.strip().splitlines() == [
        "photobot run: Telegram rejected the bot token (check TELEGRAM_BOT_TOKEN)"
    ], output
    assert "rejected-by-the-server" not in output


@pytest.mark.parametrize("value", ["-1", "many"])
def test_max_retries_must_be_a_whole_number(tmp_path, value):
    done = run_bot(tmp_path, TOKEN, "http://127.0.0.1:9", "--max-retries", value)
    assert done.returncode == 2
    assert "--max-retries: expected a whole number" in done.stderr
