"""`photobot run` as a real process against the local Bot API server: it starts, answers, and on SIGTERM
stops taking updates, finishes the photos in flight, and closes the engine and the database."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.playground.bot_api_server import BotApiServer
from tests.support.bot import TOKEN, buttons, digit_photo
from tests.support.processes import photobot_env, photobot_process, stop, wait_until

IN_FLIGHT = 5


def children_of(pid: int) -> list[int]:
    """The processes `pid` started (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def environment_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def bot_answers(server: BotApiServer, user: int) -> list[dict]:
    return [
        e["message"]
        for e in server.chat(user).events
        if e["type"] == "message" and e["message"]["from"]["is_bot"] and buttons(e["message"])
    ]


@pytest.mark.process
async def test_sigterm_finishes_photos_in_flight_then_exits_cleanly(
    tmp_path: Path, served_models: Path, glyphs
) -> None:
    shutil.copytree(served_models, tmp_path / "data" / "models")
    async with BotApiServer(TOKEN) as server:
        env = photobot_env(server.url, tmp_path / "data", TF_CPP_MIN_LOG_LEVEL="2", LOG_LEVEL="INFO")
        async with photobot_process("run", env=env, log=tmp_path / "bot.log", cwd=tmp_path) as process:
            await wait_until(lambda: server.method_calls.get("getUpdates", 0) > 0, 120, "the bot to poll")
            users = [server.add_user(5000 + i, f"U{i}")["id"] for i in range(IN_FLIGHT)]
            warm = await server.send_photo(users[0], digit_photo(glyphs[1]))
            await wait_until(lambda: bot_answers(server, users[0]), 60, "the first answer")
            assert warm["message_id"] == 1
            children = children_of(process.pid)
            assert children  # the decode processes
            assert all(TOKEN.encode() not in environment_of(pid) for pid in children)

            server.file_delay_s = 4.0  # downloads now take a while: the photos below are in flight
            files_before = server.method_calls.get("getFile", 0)
            for index, user in enumerate(users):
                await server.send_photo(user, digit_photo(glyphs[index + 2]))
            await wait_until(
                lambda: server.method_calls.get("getFile", 0) == files_before + IN_FLIGHT,
                30,
                "downloads to start",
            )
            assert sum(len(bot_answers(server, u)) for u in users) == 1  # none of the five answered yet
            polls_before = len(server.polls)
            process.send_signal(signal.SIGTERM)
            # The updater stops first: it acknowledges what it took (a getUpdates with timeout 0) and
            # polls no more, while the photos are still downloading.
            await wait_until(
                lambda: any(t == 0 for _, t in server.polls[polls_before:]), 10, "the final acknowledgement"
            )
            late = server.add_user(5999, "Late")["id"]
            await server.send_text(late, "/help")
            assert sum(len(bot_answers(server, u)) for u in users) == 1  # the five are still in flight
            code = await asyncio.wait_for(process.wait(), 60)
        output = (tmp_path / "bot.log").read_text()
        assert code == 0, output
        assert [len(bot_answers(server, u)) for u in users] == [2, 1, 1, 1, 1], output
        assert "PhotoBot stopped" in output
        assert server.polls[-1][1] == 0  # no poll after the acknowledgement
        assert [u["message"]["text"] for u in server.pending_updates] == ["/help"]  # kept for the next run
        late_replies = [
            e for e in server.chat(late).events if e["type"] == "message" and e["message"]["from"]["is_bot"]
        ]
        assert late_replies == []

    with sqlite3.connect(tmp_path / "data" / "photobot.sqlite3") as db:
        recorded = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    assert (recorded, integrity) == (IN_FLIGHT + 1, "ok")


@pytest.mark.process
async def test_webhook_mode_when_a_url_is_set(tmp_path: Path, served_models: Path) -> None:
    """WEBHOOK_URL switches to a webhook (plain HTTP, as a local-mode self-hosted Bot API server allows)."""
    import socket

    shutil.copytree(served_models, tmp_path / "data" / "models")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with BotApiServer(TOKEN, local_mode=True) as server:
        env = photobot_env(
            server.url,
            tmp_path / "data",
            WEBHOOK_URL=f"http://127.0.0.1:{port}",
            WEBHOOK_LISTEN="127.0.0.1",
            WEBHOOK_PORT=str(port),
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        async with photobot_process("run", env=env, log=tmp_path / "bot.log", cwd=tmp_path) as process:
            await wait_until(lambda: server.webhook_url, 120, "the bot to set its webhook")
            assert server.webhook_url.startswith(f"http://127.0.0.1:{port}/telegram/")
            assert TOKEN not in server.webhook_url  # the path is derived from the token, never the token
            user = server.add_user(6001, "Web")["id"]
            await server.send_text(user, "/help")
            reply = await server.wait_for(
                user, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], timeout=60
            )
            assert "Send me a photo" in reply["message"]["text"]
            assert server.polls == []  # no long polling in webhook mode
            code = await stop(process)
        assert code == 0, (tmp_path / "bot.log").read_text()


def test_run_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "photobot", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "TELEGRAM_BOT_TOKEN is not set" in done.stderr and "@BotFather" in done.stderr


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
