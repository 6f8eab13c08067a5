"""`photobot run` stopped early: SIGTERM while it is still starting (loading models, converting them for
LiteRT) ends it with the conversions abandoned, in polling and in webhook mode, instead of waiting for
them or hanging on what was half-opened."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bot.playground.bot_api_server import BotApiServer
from inference.lite import has_conversion
from inference.model_store import ModelStore
from tests.support.bot import TOKEN
from tests.support.models import add_version, digit_meta
from tests.support.processes import photobot_env, photobot_process, stop

CONVERTING = b"digits v1: converting to LiteRT in process"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.process
@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_sigterm_while_starting_and_converting_exits_at_once(
    tmp_path: Path, digit_model_file: Path, mode: str
) -> None:
    store = ModelStore(tmp_path / "data" / "models")
    add_version(store, "digits", digit_model_file, digit_meta())  # no conversion cached: one starts
    async with BotApiServer(TOKEN, local_mode=mode == "webhook") as server:
        env = photobot_env(server.url, tmp_path / "data", TF_CPP_MIN_LOG_LEVEL="2", LOG_LEVEL="INFO")
        if mode == "webhook":
            port = free_port()
            env |= {"WEBHOOK_URL": f"http://127.0.0.1:{port}", "WEBHOOK_LISTEN": "127.0.0.1"}
            env["WEBHOOK_PORT"] = str(port)
        log = tmp_path / "bot.log"
        async with photobot_process("run", env=env, log=log, cwd=tmp_path) as process:
            for _ in range(2400):  # up to 120 s on a busy machine
                if CONVERTING in log.read_bytes() or process.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            assert CONVERTING in log.read_bytes(), log.read_text()
            code = await stop(process)  # the timeout is a safety net: it hung before
    text = log.read_text()
    assert code == 0, text
    assert "digits v1: conversion to LiteRT abandoned" in text and "PhotoBot stopped" in text, text
    assert not has_conversion(store.get("digits", 1).model_file)  # converted again at the next start
