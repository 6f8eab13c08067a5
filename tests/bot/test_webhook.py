"""The webhook server of `photobot run` (bot.webhook): Telegram's call is answered 200 once the update is,
each update is answered once across replicas, and one a dead replica held is taken over — on both backends.

Each replica is a real python-telegram-bot Application over the bot's own transport, with one handler
that echoes a text (what matters here is the way of an update, not the bot's features), and a real
`Webhook` on its own port and its own connections to one database; the fake Telegram answers the bot's
Bot API calls. Updates are POSTed to the replicas as Telegram (or a balancer) would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot.app import api_urls
from bot.playground.bot_api_server import BotApiServer, Json
from bot.transport import bot_api_request
from bot.webhook import SECRET_HEADER, Webhook, WebhookConfig
from storage import Store
from tests.support.bot import TOKEN
from tests.support.storage import rows

USER = 7001
SECRET = "s3cret-token"


@pytest.fixture
async def telegram() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(TOKEN, local_mode=True) as server:
        server.add_user(USER)
        yield server


def echo_bot(server: BotApiServer, gate: asyncio.Event | None = None) -> Application:
    """A bot that answers "echo <text>"; a text "slow" waits for `gate` first."""
    base_url, base_file_url = api_urls(server.url)
    application = (
        Application.builder()
        .token(TOKEN)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .request(bot_api_request())
        .updater(None)
        .concurrent_updates(16)
        .build()
    )

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        if update.message.text == "slow" and gate is not None:
            await gate.wait()
        await update.message.reply_text(f"echo {update.message.text}")

    application.add_handler(MessageHandler(filters.TEXT, echo))
    return application


@contextlib.asynccontextmanager
async def replica(
    server: BotApiServer,
    database: Path | str,
    folder: Path,
    name: str,
    *,
    answer_within_s: float = 50.0,
    gate: asyncio.Event | None = None,
) -> AsyncIterator[Webhook]:
    """One replica: its store on `database`, its Application, its webhook server on a free port."""
    store = await Store.open(database, folder / name)
    application = echo_bot(server, gate)
    await application.initialize()
    await application.start()
    config = WebhookConfig(
        url="http://127.0.0.1:8443/hook", secret=SECRET, port=0, answer_within_s=answer_within_s
    )
    webhook = Webhook(application, config, store, replica=name)
    await webhook.start()
    try:
        yield webhook
    finally:
        await webhook.stop()
        await application.stop()
        await application.shutdown()
        await store.close()


async def post(webhook: Webhook, update: Json, secret: str = SECRET) -> int:
    """One webhook call, as Telegram makes it: the update as JSON and the secret header; its status."""
    url = f"http://127.0.0.1:{webhook.port}/hook"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=update, headers={SECRET_HEADER: secret}) as r,
    ):
        return r.status


async def new_update(server: BotApiServer, text: str) -> Json:
    await server.send_text(USER, text)
    return server.pending_updates[-1]


def answers(server: BotApiServer) -> list[str]:
    return [
        e["message"]["text"]
        for e in server.chat(USER).events
        if e["type"] == "message" and e["message"]["from"]["is_bot"]
    ]


async def test_a_copy_of_an_answered_update_is_acknowledged_without_a_second_answer(
    telegram: BotApiServer, database, tmp_path: Path
) -> None:
    async with (
        replica(telegram, database, tmp_path, "a") as a,
        replica(telegram, database, tmp_path, "b") as b,
    ):
        update = await new_update(telegram, "hello")
        assert await post(a, update) == 200
        assert answers(telegram) == ["echo hello"]  # answered before the 200
        assert await post(b, update) == 200  # Telegram's copy, on the other replica
        assert await post(a, update) == 200
        assert answers(telegram) == ["echo hello"]
        assert (a.counts.answered, a.counts.acknowledged, b.counts.acknowledged) == (1, 1, 1)
        counts = await a.store.update_counts()
        assert (counts.updates, counts.done, counts.taken_over, counts.in_doubt) == (1, 1, 0, 0)


async def test_copies_arriving_at_once_on_two_replicas_are_answered_once(
    telegram: BotApiServer, database, tmp_path: Path
) -> None:
    async with (
        replica(telegram, database, tmp_path, "a") as a,
        replica(telegram, database, tmp_path, "b") as b,
    ):
        updates = [await new_update(telegram, f"n{n}") for n in range(10)]
        statuses = await asyncio.gather(*(post(r, u) for u in updates for r in (a, b, a)))
        assert statuses == [200] * 30  # a copy another replica handles waits until it is answered
        assert sorted(answers(telegram)) == sorted(f"echo n{n}" for n in range(10))
        assert a.counts.answered + b.counts.answered == 10
        assert a.counts.acknowledged + b.counts.acknowledged == 20


async def test_a_call_without_the_secret_is_refused_and_nothing_is_claimed(
    telegram: BotApiServer, database, tmp_path: Path
) -> None:
    async with replica(telegram, database, tmp_path, "a") as a:
        update = await new_update(telegram, "forged")
        assert await post(a, update, secret="guess") == 403
        assert await post(a, {"update_id": "x"}) == 400
        assert answers(telegram) == [] and a.counts.refused == 1
        assert rows(database, "SELECT count(*) FROM webhook_updates") == [(0,)]


async def test_an_update_a_dead_replica_held_is_taken_over_when_its_lease_runs_out(
    telegram: BotApiServer, database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with replica(telegram, database, tmp_path, "alive", answer_within_s=30.0) as alive:
        quiet, answered = await new_update(telegram, "quiet"), await new_update(telegram, "answered")
        for update in (quiet, answered):  # claimed by a replica that died before its lease ran out
            await alive.store.claim_update(update["update_id"], "dead", now=time.time(), lease_s=1.0)
        await alive.store.mark_answering(answered["update_id"], "dead", now=time.time())  # then it died
        with caplog.at_level(logging.INFO, logger="bot.webhook"):
            assert await asyncio.gather(post(alive, quiet), post(alive, answered)) == [200, 200]
        assert sorted(answers(telegram)) == ["echo answered", "echo quiet"]
        assert (alive.counts.taken_over, alive.counts.in_doubt) == (2, 1)
        in_doubt = [r.getMessage() for r in caplog.records if "may get this answer twice" in r.getMessage()]
        assert len(in_doubt) == 1 and f"update {answered['update_id']} taken over from dead" in in_doubt[0]
        assert rows(database, "SELECT sum(claims), sum(in_doubt) FROM webhook_updates") == [(4, 1)]


async def test_an_update_slower_than_the_limit_gets_503_and_its_copy_is_acknowledged_once_answered(
    telegram: BotApiServer, database, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    async with replica(telegram, database, tmp_path, "a", answer_within_s=0.5, gate=gate) as a:
        update = await new_update(telegram, "slow")
        assert await post(a, update) == 503  # Telegram will deliver it again; the replica goes on
        assert a.counts.late == 1 and answers(telegram) == []
        gate.set()
        for _ in range(200):
            if a.counts.answered:
                break
            await asyncio.sleep(0.05)
        assert answers(telegram) == ["echo slow"]
        assert await post(a, update) == 200  # the copy
        assert answers(telegram) == ["echo slow"] and a.counts.acknowledged == 1


async def test_replicas_starting_together_set_the_webhook_once(
    telegram: BotApiServer, database, tmp_path: Path
) -> None:
    async with (
        replica(telegram, database, tmp_path, "a") as a,
        replica(telegram, database, tmp_path, "b") as b,
        replica(telegram, database, tmp_path, "c") as c,
    ):
        calls = await asyncio.gather(*(r.ensure_webhook(r.application.bot) for r in (a, b, c)))
        assert sorted(calls) == [False, False, True]
        assert telegram.method_calls["setWebhook"] == 1
        setting = await a.store.webhook_setting()
        assert setting is not None and setting.set_by == "abc"[calls.index(True)]
        await a.application.bot.delete_webhook()


async def test_replicas_set_the_webhook_once_and_one_with_other_settings_says_so(
    telegram: BotApiServer, database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        replica(telegram, database, tmp_path, "a") as a,
        replica(telegram, database, tmp_path, "b") as b,
    ):
        assert await a.ensure_webhook(a.application.bot)
        assert not await b.ensure_webhook(b.application.bot)
        assert not await a.ensure_webhook(a.application.bot)
        assert telegram.method_calls["setWebhook"] == 1
        assert telegram.webhook_url == "http://127.0.0.1:8443/hook"
        info = await a.application.bot.get_webhook_info()
        assert (info.max_connections, info.allowed_updates) == (40, ("message", "callback_query"))
        other = Webhook(
            b.application, WebhookConfig(url=a.config.url, secret="rotated"), b.store, replica="c"
        )
        with caplog.at_level(logging.WARNING, logger="bot.webhook"):
            assert await other.ensure_webhook(b.application.bot)
        assert any("set the webhook with other settings" in r.getMessage() for r in caplog.records)
        setting = await a.store.webhook_setting()
        assert setting is not None and setting.set_by == "c"
        await a.application.bot.delete_webhook()
