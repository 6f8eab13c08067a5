"""The bot on a webhook: Telegram POSTs each update, a replica answers it, and only then says 200.

Several replicas may sit behind one load balancer, sharing the database (docs/architecture.md, "One
update's way through a replica"). python-telegram-bot's own webhook server acknowledges an update as
soon as it is queued, so an update in the hands of a replica that dies would be lost; this server holds
Telegram's call until the update is answered, with its steps in the database
(`storage.queries.updates`):

1. **claim** the `update_id` (a copy already answered is acknowledged at once; one another replica is
   handling is waited on until it is answered, or taken over when that replica's lease runs out);
2. **handle** it with the application's handlers; before the first Bot API call that shows the person
   something, note **answering** (`bot.transport.BEFORE_ANSWER`);
3. record it **done**, and answer Telegram 200.

A call is never held past `answer_within_s` (50 s; Telegram gives up at 60 s and delivers again): a
slower update is answered 503, its handling goes on and its lease is renewed meanwhile, and the copy
Telegram sends later is acknowledged once it is done. A process's leases are renewed every third of
`lease_s` while it works; a killed process's run out, and the next copy of each of its updates is taken
over. The one window left is between Telegram accepting an answer and `done` being committed (one
write): a replica dying in it makes the next owner answer again. Such takeovers are counted
(`in_doubt`, here and in the database) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import Bot, Update
from telegram.ext import Application

from bot.services import KEY, Services
from bot.transport import BEFORE_ANSWER
from storage.errors import StorageError
from storage.queries.updates import Claim, WebhookSetting
from storage.store_updates import UpdateCalls

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
HELD_POLL_S = 0.25  # how often a copy of an update another replica handles looks again
REFUSED_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class WebhookConfig:
    """Where Telegram POSTs updates and how this replica answers them."""

    url: str  # what Telegram calls: the public URL and the secret path
    secret: str = field(repr=False)  # Telegram sends it in X-Telegram-Bot-Api-Secret-Token
    public_url: str = ""  # WEBHOOK_URL, for the logs (the path above is a secret too)
    listen: str = "127.0.0.1"
    port: int = 8443
    max_connections: int = 40  # setWebhook's: Telegram's concurrent calls to the balancer
    answer_within_s: float = 50.0  # a call is answered by then (Telegram waits 60 s)
    lease_s: float = 15.0  # a replica silent this long loses its updates to the next copy
    allowed_updates: tuple[str, ...] = (Update.MESSAGE, Update.CALLBACK_QUERY)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @property
    def fingerprint(self) -> str:
        """What identifies these webhook settings, without revealing the secret."""
        settings = [self.url, self.secret, sorted(self.allowed_updates), self.max_connections]
        return hashlib.sha256(json.dumps(settings).encode()).hexdigest()


@dataclass
class WebhookCounts:
    """What this replica's webhook did since it started (the cluster's truth is in the database)."""

    answered: int = 0  # handled here and recorded done
    acknowledged: int = 0  # copies of updates already answered: 200 without handling them
    taken_over: int = 0  # updates whose owner's lease ran out, handled here
    in_doubt: int = 0  # of those, ones whose owner had begun answering: the person may see two answers
    unrecorded: int = 0  # answered here, `done` not recorded: the next copy is answered again
    late: int = 0  # not answered within answer_within_s: 503, Telegram delivers them again
    refused: int = 0  # calls without the right secret
    unavailable: int = 0  # the database could not be reached to claim: 503


def new_replica_name() -> str:
    """This process's name in the claims: its host, its pid and a tag (two replicas in one test process)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class Webhook:
    """The HTTP server Telegram (or the balancer) calls, and the leases of the updates it handles."""

    def __init__(
        self,
        application: Application,
        config: WebhookConfig,
        store: UpdateCalls,
        *,
        replica: str | None = None,
    ) -> None:
        self.application = application
        self.config = config
        self.store = store
        self.replica = replica or new_replica_name()
        self.counts = WebhookCounts()
        self._secret = config.secret.encode()
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task[int]] = set()
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._refused_logged_at = float("-inf")
        self.port = config.port

    async def start(self) -> None:
        """Listen (the application must be started, its services open) and renew leases from now on."""
        app = web.Application()
        app.router.add_post(self.config.path, self._receive)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.config.answer_within_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen, self.config.port)
        await site.start()
        if self.config.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._heartbeat = asyncio.create_task(self._renew_leases(), name="webhook-leases")
        logger.info("replica %s takes webhook updates on %s:%d", self.replica, self.config.listen, self.port)

    async def stop(self) -> None:
        """Stop listening, answer the updates in hand (up to answer_within_s), give the rest up."""
        self._stopping = True
        if self._runner is not None:  # stops listening, then waits for the calls in progress
            await self._runner.cleanup()
        if self._tasks:  # updates whose call was answered 503 for being late, still being handled
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=self.config.answer_within_s)
            for task in unfinished:
                task.cancel()  # released: the next copy is taken over at once
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        logger.info("webhook stopped: %s", self.counts)

    async def ensure_webhook(self, bot: Bot) -> bool:
        """Set the webhook unless another replica set (or is setting) these same settings.

        Replicas started together or one by one call setWebhook once between them: each claims the
        call in the database under its write lock, and the first claim wins. One with other settings
        replaces the webhook, with a warning. True when this replica called setWebhook.
        """
        seen_at = time.time()
        info = await bot.get_webhook_info()
        mine = WebhookSetting(self.config.fingerprint, self.config.public_url, self.replica, time.time())
        claim = await self.store.claim_webhook_setting(
            mine, telegram_has_it=info.url == self.config.url, seen_at=seen_at
        )
        if claim.held_by is not None:
            set_by = claim.held_by.set_by
            logger.info("the webhook %s is set (by %s); left as it is", self.config.public_url, set_by)
            return False
        replaced = claim.replaced
        if replaced is not None and replaced.fingerprint != self.config.fingerprint and info.url:
            logger.warning(
                "replica %s set the webhook with other settings; this one sets its own. Every replica must "
                "have the same WEBHOOK_URL, WEBHOOK_SECRET and WEBHOOK_MAX_CONNECTIONS",
                replaced.set_by,
            )
        try:
            await bot.set_webhook(
                url=self.config.url,
                secret_token=self.config.secret,
                allowed_updates=list(self.config.allowed_updates),
                max_connections=self.config.max_connections,
                drop_pending_updates=False,
            )
        except Exception:
            await self.store.forget_webhook_setting(mine)  # the next replica to start sets it
            raise
        logger.info("webhook set: Telegram POSTs updates to %s", self.config.public_url)
        return True

    # ------------------------------------------------------------------ one call

    async def _health(self, request: web.Request) -> web.Response:
        """For the balancer: 200 while this replica takes updates, 503 once it stops."""
        return web.Response(
            status=503 if self._stopping else 200, text="stopping" if self._stopping else "ok"
        )

    async def _receive(self, request: web.Request) -> web.Response:
        """One call from Telegram: 200 once the update is answered (or was already), else 4xx/5xx."""
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), self._secret):
            self._refuse(request)
            return web.Response(status=403)
        try:
            data = await request.json()
            update_id = int(data["update_id"])
            update = Update.de_json(data, self.application.bot)
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not a Telegram update")
        if self._stopping:
            return web.Response(status=503)  # another replica, or Telegram's next try, takes it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.answer_within_s
        task = asyncio.create_task(self._handle(update_id, update, deadline), name=f"update-{update_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:  # shielded: Telegram giving up on the call must not cut an answer in half
            status = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.counts.late += 1
            logger.warning(
                "update %d not answered within %g s: 503, so Telegram delivers it again; this replica goes "
                "on with it and the next copy is acknowledged once it is answered",
                update_id,
                self.config.answer_within_s,
            )
            status = 503
        return web.Response(status=status)

    async def _handle(self, update_id: int, update: Update, deadline: float) -> int:
        """Claim, handle, record done: the HTTP status to answer Telegram with."""
        claim = await self._claim(update_id, deadline)
        if claim is None:
            return 503
        if claim.status == "done":
            self.counts.acknowledged += 1
            return 200
        self._note_takeover(update_id, claim)
        store = self.store
        self._in_flight.add(update_id)
        answering = _Answering(self, update_id)
        token = BEFORE_ANSWER.set(answering.before_answer)
        try:
            processor = self.application.update_processor
            await processor.process_update(update, self.application.process_update(update))
        except BaseException:  # stopped mid-update, or a failure outside the handlers
            self._in_flight.discard(update_id)
            with contextlib.suppress(Exception):
                await store.release_update(update_id, self.replica)
            raise
        finally:
            BEFORE_ANSWER.reset(token)
            answering.closed = True
        try:
            recorded = await store.finish_update(update_id, self.replica, now=time.time())
        except StorageError as error:
            self.counts.unrecorded += 1
            logger.error(
                "update %d was answered but not recorded as done (%s): Telegram delivers it again and it is "
                "answered again (unrecorded: %d on this replica)",
                update_id,
                error,
                self.counts.unrecorded,
            )
            return 500
        finally:
            self._in_flight.discard(update_id)
        if not recorded:
            logger.warning("update %d was taken over by another replica while this one handled it", update_id)
        self.counts.answered += 1
        return 200

    async def _claim(self, update_id: int, deadline: float) -> Claim | None:
        """This replica's claim on the update, or None: the database is down, or another replica still
        handles it at the deadline (a 503; Telegram's next copy looks again)."""
        loop = asyncio.get_running_loop()
        store = self.store
        while True:
            try:
                claim = await store.claim_update(
                    update_id, self.replica, now=time.time(), lease_s=self.config.lease_s
                )
            except StorageError as error:
                self.counts.unavailable += 1
                logger.error(
                    "update %d could not be claimed (%s): 503, Telegram delivers it again", update_id, error
                )
                return None
            if claim.status != "held":
                return claim
            if loop.time() + HELD_POLL_S >= deadline:
                return None
            await asyncio.sleep(HELD_POLL_S)  # answered by its owner soon, or its lease runs out

    def _note_takeover(self, update_id: int, claim: Claim) -> None:
        if claim.status != "taken_over":
            return
        self.counts.taken_over += 1
        if claim.in_doubt:
            self.counts.in_doubt += 1
            logger.warning(
                "update %d taken over from %s, whose lease ran out after it had begun answering: the person "
                "may get this answer twice (in doubt: %d on this replica)",
                update_id,
                claim.previous,
                self.counts.in_doubt,
            )
        else:
            logger.info(
                "update %d taken over from %s, whose lease ran out before it answered",
                update_id,
                claim.previous,
            )

    def _refuse(self, request: web.Request) -> None:
        self.counts.refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSED_LOG_EVERY_S:
            self._refused_logged_at = now
            logger.warning(
                "a webhook call from %s without the right secret was refused (%d so far): a replica with "
                "another WEBHOOK_SECRET set the webhook, or someone else calls it",
                request.remote,
                self.counts.refused,
            )

    async def _renew_leases(self) -> None:
        """Every third of the lease, extend the leases of the updates this replica is handling."""
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            if not self._in_flight:
                continue
            try:
                await self.store.renew_leases(
                    self.replica, sorted(self._in_flight), lease_until=time.time() + self.config.lease_s
                )
            except StorageError as error:
                logger.error("the leases of %d updates could not be renewed: %s", len(self._in_flight), error)


class _Answering:
    """One update's note that an answer is on its way: written once, before its first visible call."""

    def __init__(self, webhook: Webhook, update_id: int) -> None:
        self.webhook, self.update_id = webhook, update_id
        self.closed = False  # the update is handled: later calls (a task it started) are not its answer
        self._noting: asyncio.Future[bool] | None = None

    async def before_answer(self) -> None:
        if self.closed:
            return
        if self._noting is None:  # calls made at once wait for the one note
            self._noting = asyncio.ensure_future(
                self.webhook.store.mark_answering(self.update_id, self.webhook.replica, now=time.time())
            )
        if not await asyncio.shield(self._noting):
            raise RuntimeError(
                f"update {self.update_id} was taken over by another replica: not answered here"
            )


async def _started(starting: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run the start-up unless `stop` is set first; then leave it to `post_shutdown`, which cancels it."""
    started = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not started.done():
        return False
    started.result()  # its failure, if it failed
    return True


async def run_webhook(
    application: Application, config: WebhookConfig, *, stop: asyncio.Event | None = None
) -> None:
    """`run_polling`'s counterpart for webhooks, on the running loop, until SIGTERM / SIGINT (or `stop`):
    services opened, the server started, the webhook set; on the way out the updates in hand are answered
    before the services close."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    webhook: Webhook | None = None
    await application.initialize()
    try:
        if application.post_init is not None and not await _started(application.post_init(application), stop):
            return  # stopped while starting (loading models takes a while): post_shutdown closes the rest
        await application.start()
        found: Services = application.bot_data[KEY]
        webhook = Webhook(application, config, found.store)
        counts = webhook.counts
        found.metrics.follow_counts(
            "photobot_webhook_updates",
            "Webhook calls by what became of them (WebhookCounts): answered, acknowledged, taken_over, "
            "in_doubt, unrecorded, late, refused, unavailable",
            "outcome",
            lambda: asdict(counts),
        )
        await webhook.start()
        await webhook.ensure_webhook(application.bot)
        await stop.wait()
    finally:
        if webhook is not None:
            await webhook.stop()
        if application.running:
            await application.stop()
        await application.shutdown()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)
