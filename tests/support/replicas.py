"""Several real bot processes' worth of Applications on one DATA_DIR, behind one webhook.

This is how replicas are deployed: Telegram POSTs each update to one webhook URL, a load balancer hands
it to one of the bot processes, and they all share one database. Here the local Bot API server
(`local_mode`, so a plain-HTTP webhook is allowed) POSTs to a small balancer on 127.0.0.1, which hands
each update to one Application the way python-telegram-bot's own webhook handler does
(`update_queue.put(Update.de_json(…))`). Each Application is the whole bot (`build_bot`): its own
services, engine and decode processes, its own connections to the shared SQLite file.

Replicas start and stop one by one, so a test can also run them in sequence (a restart: the server and
the chats stay, the bot process is new). `to(i)` sends the next updates to replica `i`; `round_robin()`
alternates between those running.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from telegram import Update
from telegram.ext import Application

from bot.playground.bot_api_server import BotApiServer
from photobot.settings import Settings
from photobot.wiring import build_bot
from tests.support.bot import ADMIN_ID, TOKEN, BotHarness

HOOK = "/telegram-webhook"


@dataclass
class Replicas:
    server: BotApiServer
    settings: Settings
    slots: list[Application | None]
    delivered: list[int] = field(default_factory=list)  # the replica each update went to, in order
    _target: int | None = None  # None: round robin over the running replicas
    _turns: itertools.count[int] = field(default_factory=itertools.count)
    _runner: web.AppRunner | None = None

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        model_dir: Path,
        count: int = 2,
        *,
        running: tuple[int, ...] | None = None,
        **overrides: Any,
    ) -> Replicas:
        """The server, the balancer (its webhook) and `count` replica slots on `data_dir`; those in
        `running` (default: all) started."""
        shutil.copytree(model_dir, data_dir / "models", dirs_exist_ok=True)
        server = BotApiServer(TOKEN, local_mode=True)
        await server.start()
        settings = Settings(
            telegram_bot_token=TOKEN,
            telegram_api_url=server.url,
            admin_ids=frozenset({ADMIN_ID}),
            data_dir=data_dir,
        )
        replicas = cls(server, replace(settings, **overrides), [None] * count)
        await replicas._start_balancer()
        for index in range(count) if running is None else running:
            await replicas.start_replica(index)
        return replicas

    async def start_replica(self, index: int) -> Application:
        """Start replica `index` (a new Application: a new bot process, as far as the bot can tell)."""
        if self.slots[index] is not None:
            raise ValueError(f"replica {index} is running")
        application = build_bot(self.settings, names=("digits",))
        await application.initialize()
        await application.post_init(application)  # type: ignore[misc]
        await application.start()
        self.slots[index] = application
        return application

    async def stop_replica(self, index: int) -> None:
        """Stop replica `index` as `photobot run` stops: the updates in hand are answered first."""
        application = self.slots[index]
        if application is None:
            return
        self.slots[index] = None
        await application.stop()
        await application.shutdown()
        await application.post_shutdown(application)  # type: ignore[misc]

    async def stop(self) -> None:
        for index in range(len(self.slots)):
            await self.stop_replica(index)
        await self.server.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def to(self, index: int) -> BotHarness:
        """Send the next updates to replica `index`; the harness's helpers talk to the shared server."""
        self._target = index
        return self.bot(index)

    def round_robin(self) -> None:
        """Alternate the next updates between the running replicas, one each in turn."""
        self._target = None

    def bot(self, index: int) -> BotHarness:
        application = self.slots[index]
        if application is None:
            raise ValueError(f"replica {index} is not running")
        return BotHarness(self.server, application, self.settings)

    async def _start_balancer(self) -> None:
        app = web.Application()
        app.router.add_post(HOOK, self._deliver)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:  # as a deployment does: setWebhook to the balancer
            url = f"{self.server.url}/bot{TOKEN}/setWebhook"
            async with http.post(url, data={"url": f"http://127.0.0.1:{port}{HOOK}"}) as response:
                assert (await response.json())["ok"], await response.text()

    async def _deliver(self, request: web.Request) -> web.Response:
        """Hand the update to one replica; a 503 (Telegram delivers it again) while none runs."""
        running = [index for index, app in enumerate(self.slots) if app is not None]
        if not running:
            return web.Response(status=503)
        index = self._target if self._target in running else running[next(self._turns) % len(running)]
        application = self.slots[index]
        assert application is not None
        await application.update_queue.put(Update.de_json(await request.json(), application.bot))
        self.delivered.append(index)
        return web.Response()
