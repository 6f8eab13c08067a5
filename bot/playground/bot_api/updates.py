"""The updates waiting for the bot, handed out by long polling (getUpdates) or POSTed to its webhook."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque

from bot.playground.bot_api.protocol import Json

logger = logging.getLogger(__name__)


class UpdateQueue:
    """Updates in order, each kept until the bot acknowledges it (a later offset, or its webhook's 200)."""

    def __init__(self) -> None:
        self.pending: deque[Json] = deque()
        self.polls: list[tuple[int, float]] = []  # (offset, timeout) of every getUpdates, in order
        self.webhook_url = ""
        self._webhook_secret: str | None = None
        self._deliverer: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._closing = False

    async def push(self, content: Json) -> Json:
        """Queue an update (an `update_id` is added), after checking that python-telegram-bot can parse it.

        One malformed update would make a polling bot retry in a hot loop, so none gets in.
        """
        from telegram import Update  # the bot package depends on it anyway; keeps import of this module light

        update = {"update_id": next(self._ids), **content}
        try:
            Update.de_json(json.loads(json.dumps(update)), None)
        except Exception as error:
            raise ValueError(f"python-telegram-bot cannot parse this update: {error}") from error
        async with self._changed:
            self.pending.append(update)
            self._changed.notify_all()
        return update

    async def poll(self, offset: int, limit: int, timeout: float, allowed: list[str] | None) -> list[Json]:
        """Acknowledge the updates below `offset`, then answer the next ones, waiting up to `timeout`."""
        self.polls.append((offset, timeout))
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                self._acknowledge(offset)
                ready = [u for u in self.pending if not allowed or _update_kind(u) in allowed]
                remaining = deadline - time.monotonic()
                if ready or remaining <= 0 or self._closing:
                    return ready[:limit]
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return []

    def _acknowledge(self, offset: int) -> None:
        """Forget updates below `offset` (a negative offset keeps only the last -offset updates)."""
        if offset < 0:
            while len(self.pending) > -offset:
                self.pending.popleft()
        elif offset > 0:
            while self.pending and self.pending[0]["update_id"] < offset:
                self.pending.popleft()

    async def set_webhook(self, url: str, secret: str | None) -> None:
        """Deliver to `url` from now on ("" goes back to polling); pollers waiting now are answered."""
        self.webhook_url, self._webhook_secret = url, secret
        async with self._changed:
            self._changed.notify_all()
        if url and (self._deliverer is None or self._deliverer.done()):
            self._deliverer = asyncio.create_task(self._deliver(), name="bot-api-webhook")

    async def _deliver(self) -> None:
        """POST queued updates to the webhook one by one, in order; an update is dropped once answered 200."""
        import aiohttp

        async with aiohttp.ClientSession() as http:
            while True:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self._closing or not self.webhook_url or bool(self.pending)
                    )
                if self._closing or not self.webhook_url:
                    return
                update = self.pending[0]
                headers = (
                    {"X-Telegram-Bot-Api-Secret-Token": self._webhook_secret} if self._webhook_secret else {}
                )
                try:
                    async with http.post(self.webhook_url, json=update, headers=headers) as response:
                        delivered = response.status == 200
                except aiohttp.ClientError as error:
                    logger.info("webhook %s unreachable: %s", self.webhook_url, error)
                    delivered = False
                if delivered and self.pending and self.pending[0] is update:
                    self.pending.popleft()
                elif not delivered:
                    await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Answer the waiting polls and stop delivering to the webhook."""
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._deliverer is not None:
            await self._deliverer


def _update_kind(update: Json) -> str:
    return next(k for k in update if k != "update_id")
