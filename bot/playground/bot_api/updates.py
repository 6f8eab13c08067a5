"""The updates waiting for the bot, handed out by long polling (getUpdates) or POSTed to its webhook.

Webhook delivery follows Telegram's: updates of one chat are sent one at a time and in order, updates of
different chats at once (up to setWebhook's `max_connections`, 40 by default); an update is kept until
its POST is answered with a 2xx, and a failure (another status, a connection refused or reset, no answer
within `webhook_timeout_s`, 60 s as Telegram's) is delivered again after a wait that grows with each try
(`retry_delays_s`), holding the chat's later updates back meanwhile. Every try is in `deliveries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

import aiohttp

from bot.playground.bot_api.protocol import Json

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 60.0  # Telegram closes a webhook call unanswered after 60 s and delivers it again
DEFAULT_MAX_CONNECTIONS = 40  # Telegram's default for setWebhook's max_connections
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # after the 1st, 2nd … failure of one update; the last repeats


@dataclass(frozen=True)
class Delivery:
    """One webhook POST of one update and how it ended: "ok", "status 503", "timeout", "unreachable"."""

    update_id: int
    outcome: str
    at: float  # time.monotonic() when it ended


class UpdateQueue:
    """Updates in order, each kept until the bot acknowledges it (a later offset, or its webhook's 200)."""

    def __init__(self) -> None:
        self.pending: deque[Json] = deque()
        self.polls: list[tuple[int, float]] = []  # (offset, timeout) of every getUpdates, in order
        self.webhook_url = ""
        self.max_connections = DEFAULT_MAX_CONNECTIONS
        self.allowed_updates: list[str] = []
        self.webhook_timeout_s = WEBHOOK_TIMEOUT_S
        self.retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S
        self.deliveries: list[Delivery] = []  # every webhook POST, in the order they ended
        self.last_error: tuple[int, str] | None = None  # (unix time, message), as getWebhookInfo says
        self._webhook_secret: str | None = None
        self._deliverer: asyncio.Task | None = None
        self._sending: set[int] = set()  # update_ids whose POST is in flight
        self._tries: dict[int, int] = {}  # update_id → failed tries so far
        self._not_before: dict[int, float] = {}  # update_id → monotonic time of its next try
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

    async def set_webhook(
        self,
        url: str,
        secret: str | None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        allowed_updates: list[str] | None = None,
    ) -> None:
        """Deliver to `url` from now on ("" goes back to polling); pollers waiting now are answered."""
        self.webhook_url, self._webhook_secret = url, secret
        self.max_connections = max_connections
        if allowed_updates is not None:
            self.allowed_updates = list(allowed_updates)
        async with self._changed:
            self._changed.notify_all()
        if url and (self._deliverer is None or self._deliverer.done()):
            self._deliverer = asyncio.create_task(self._deliver(), name="bot-api-webhook")

    async def _deliver(self) -> None:
        """POST each chat's oldest update, chats at once up to `max_connections`, until the webhook goes."""
        posts: set[asyncio.Task] = set()
        async with aiohttp.ClientSession() as http:
            try:
                while True:
                    async with self._changed:
                        update = await self._next_update()
                        if update is None:
                            return
                        self._sending.add(update["update_id"])
                    post = asyncio.create_task(self._post(http, update), name="bot-api-webhook-post")
                    posts.add(post)
                    post.add_done_callback(posts.discard)
            finally:
                for post in list(posts):
                    post.cancel()
                await asyncio.gather(*posts, return_exceptions=True)

    async def _next_update(self) -> Json | None:
        """The next update to POST (None: the webhook is gone), waiting for one; holds `_changed`."""
        while True:
            if self._closing or not self.webhook_url:
                return None
            update, wait_s = self._ready()
            if update is not None:
                return update
            with contextlib.suppress(TimeoutError):  # a held-back update's retry time has come
                await asyncio.wait_for(self._changed.wait(), wait_s)

    def _ready(self) -> tuple[Json | None, float | None]:
        """The oldest update that may go now, or None and how long until one may (None: until a change)."""
        if len(self._sending) >= self.max_connections:
            return None, None
        now = time.monotonic()
        seen: set[object] = set()
        soonest: float | None = None
        for update in self.pending:
            chat = _chat_of(update)
            if chat in seen:  # a chat's later updates wait for its oldest
                continue
            seen.add(chat)
            if update["update_id"] in self._sending:
                continue
            not_before = self._not_before.get(update["update_id"], now)
            if not_before <= now:
                return update, None
            soonest = not_before - now if soonest is None else min(soonest, not_before - now)
        return None, soonest

    async def _post(self, http: aiohttp.ClientSession, update: Json) -> None:
        """One try: POST the update; a 2xx acknowledges it, anything else is tried again later."""
        update_id = update["update_id"]
        headers = {"X-Telegram-Bot-Api-Secret-Token": self._webhook_secret} if self._webhook_secret else {}
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout_s)
        try:
            async with http.post(self.webhook_url, json=update, headers=headers, timeout=timeout) as response:
                outcome = "ok" if 200 <= response.status < 300 else f"status {response.status}"
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError as error:
            logger.info("webhook %s unreachable: %s", self.webhook_url, error)
            outcome = "unreachable"
        self.deliveries.append(Delivery(update_id, outcome, time.monotonic()))
        async with self._changed:
            self._sending.discard(update_id)
            if outcome == "ok":
                self._tries.pop(update_id, None)
                self._not_before.pop(update_id, None)
                if update in self.pending:
                    self.pending.remove(update)
            else:
                tries = self._tries[update_id] = self._tries.get(update_id, 0) + 1
                delay = self.retry_delays_s[min(tries, len(self.retry_delays_s)) - 1]
                self._not_before[update_id] = time.monotonic() + delay
                self.last_error = (int(time.time()), _error_message(outcome))
            self._changed.notify_all()

    async def close(self) -> None:
        """Answer the waiting polls and stop delivering to the webhook."""
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._deliverer is not None:
            await self._deliverer


def _update_kind(update: Json) -> str:
    return next(k for k in update if k != "update_id")


def _chat_of(update: Json) -> object:
    """The chat an update belongs to (Telegram delivers one chat's updates in order, one at a time)."""
    content = update[_update_kind(update)]
    message = content.get("message", content) if isinstance(content, dict) else {}
    chat = message.get("chat") if isinstance(message, dict) else None
    if isinstance(chat, dict) and "id" in chat:
        return chat["id"]
    sender = content.get("from") if isinstance(content, dict) else None
    return ("user", sender["id"]) if isinstance(sender, dict) else ("update", update["update_id"])


def _error_message(outcome: str) -> str:
    """getWebhookInfo's last_error_message for a failed try, worded as Telegram's."""
    if outcome == "timeout":
        return "Read timeout expired"
    if outcome == "unreachable":
        return "Connection refused"
    return f"Wrong response from the webhook: {outcome.removeprefix('status ')}"
