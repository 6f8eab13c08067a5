"""Retraining on `photobot worker` processes (RETRAIN_WORKERS=external): the bot queues, a worker runs.

The bot that takes /retrain only queues the job (`runner = 'worker'`, `enqueue`) and sends its progress
message, whose chat, id and language go into the job's row. Any `photobot worker` (on a GPU node, on
any machine that shares DATABASE_URL) claims queued jobs (`storage.queries.leases`: one per model at a
time, cluster-wide), runs each as the same process the bot would start (`photobot retrain --job-id N`,
with `--worker` so that it ends with the worker), and holds it by a lease it renews while it runs.

The worker, not a bot, edits the progress message and sends the report. It is the one process that
lives exactly as long as the job (the job's process dies with it), the report and its pictures are on
its disk, and so no bot replica needs to be up, or be the one that took /retrain, for the admin to see
the job through. It talks to Telegram with the bot's token; the job's process still gets none. The bots
serve a promoted version by following the model pointer (ENGINE_RELOAD_POLL_S), as after any promotion
made by another process.

A worker that dies (SIGKILL, a crash, its machine, its way to the database) stops renewing its lease.
Whoever sees the lease run out first (another worker as it polls, a bot at its start or at the next
/retrain) marks the job failed with why, edits the admin's progress message and tells them (`expire`).
A worker that finds its lease lost stops its job before the job could promote (the job also checks,
just before promoting, that it still runs). SIGTERM or Ctrl-C to a worker stops the job it runs (failed:
"stopped by signal SIGTERM"), reports it, and ends the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.metrics import WorkerMetrics
from bot.retrain_progress import TimeLeft, describe_exit, failed_text, progress_text
from bot.retraining import announce_job, edit_progress, job_log_path, send_report
from bot.texts import text
from storage.records import new_watcher

if TYPE_CHECKING:
    from telegram import Bot

    from bot.config import WorkerConfig
    from bot.services import Services
    from inference.model_store import ModelStore
    from storage.database import Store
    from storage.records import RetrainJob

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- the bot's side


async def enqueue(
    found: Services,
    bot: Bot,
    model: str,
    *,
    chat_id: int,
    requested_by: int | None,
    force: bool,
    language: str,
) -> RetrainJob | None:
    """Queue a job for the workers and send its progress message (None, and the admin is told which
    job is in the way, when one of the same model is queued or running)."""
    announced = await announce_job(
        found.store,
        bot,
        model,
        chat_id=chat_id,
        requested_by=requested_by,
        language=language,
        runner="worker",
        forced=force,
    )
    if announced is None:
        return None
    job, _ = announced
    logger.info("retrain job %d (%s) queued for the workers", job.id, model)
    return job


async def expire(store: Store, bot: Bot, models: ModelStore) -> list[RetrainJob]:
    """Fail the worker jobs whose lease ran out, and tell each admin why (bots and workers call it)."""
    expired = await store.expire_retrain_leases()
    for job in expired:
        logger.warning("retrain job %d: %s", job.id, job.error)
        await tell_failed(bot, job, models)
    return expired


async def tell_failed(bot: Bot, job: RetrainJob, models: ModelStore, *, tell: bool = True) -> None:
    """The failed job's progress message shows why, and (unless not `tell`) a message says what keeps
    serving."""
    if job.chat_id is None or job.message_id is None:
        return  # its start message was never sent: nobody to tell
    language = job.language or "en"
    await edit_progress(bot, job.chat_id, job.message_id, progress_text(job, language=language))
    if not tell:
        return
    serving = await asyncio.to_thread(models.active_version, job.model)
    with contextlib.suppress(Exception):  # the row says it; a Bot API outage must not stop the caller
        await bot.send_message(job.chat_id, failed_text(job, serving, language))


# ------------------------------------------------------------------------------------ the worker's side


@dataclass
class RetrainWorker:
    """Claims jobs queued for workers and runs them one at a time (`photobot worker`)."""

    config: WorkerConfig
    store: Store
    bot: Bot
    models: ModelStore
    name: str = field(default_factory=new_watcher)  # host/pid/tag: `retrain_jobs.worker`
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)  # records nothing unless METRICS_PORT

    async def run(self, *, once: bool = False) -> int:
        """Poll for jobs until `stopping` is set (or, with `once`, until one job ran); the jobs run."""
        ran = 0
        logger.info("worker %s: waiting for retrain jobs (lease %.0f s)", self.name, self.config.lease_s)
        if not self.config.admin_ids:
            logger.warning("ADMIN_IDS is not set for this worker: reports go to whoever asked for the job")
        while not self.stopping.is_set():
            job = None
            try:
                queued, expired = await self.store.worker_jobs_to_do()
                if expired:
                    await expire(self.store, self.bot, self.models)
                if queued:
                    job = await self.store.claim_retrain_job(self.name, self.config.lease_s)
            except Exception:  # the database or the Bot API is away for a while: poll again
                self.metrics.poll_failed()
                logger.exception("worker %s: looking for jobs failed; trying again", self.name)
            if job is not None:
                with self.metrics.running(job.model):
                    done = await self.run_job(job)
                took = done.finished_at - done.started_at if done.finished_at and done.started_at else None
                self.metrics.ran(done.model, done.status, done.decision, took)
                ran += 1
                if once:
                    break
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.poll_s)
        return ran

    def stop(self) -> None:
        """Stop polling; the job running now is stopped (SIGTERM) and reported (a signal handler)."""
        self.stopping.set()

    async def run_job(self, job: RetrainJob) -> RetrainJob:
        """Run a claimed job in its own process, show its progress, report; the job as it ended."""
        command = self.command(job)
        logger.info(
            "worker %s: running retrain job %d (%s): %s", self.name, job.id, job.model, " ".join(command)
        )
        try:
            process = await self._spawn(command, job_log_path(self.config.data_dir, job.id))
        except OSError as error:
            await self.store.fail_retrain_job(job.id, f"the job process could not start: {error}")
            job = await self._job(job.id)
            await tell_failed(self.bot, job, self.models)
            return job
        follow = _Follow(self, job, process)
        job = await follow.run()
        if job.lease_expired and not follow.failed_here:  # whoever failed it has told the admin
            logger.warning("retrain job %d was failed under this worker: %s", job.id, job.error)
        elif job.chat_id is not None and job.message_id is not None:
            try:
                await self._report(job)
            except Exception:  # the Bot API is away: the job's row and report folder keep the outcome
                logger.exception("retrain job %d: the report could not be sent", job.id)
        return job

    def command(self, job: RetrainJob) -> list[str]:
        command = [
            self.config.python,
            "-m",
            "photobot",
            "retrain",
            "--model",
            job.model,
            "--job-id",
            str(job.id),
        ]
        command += ["--worker", self.name]
        if self.config.nice:
            command += ["--nice", str(self.config.nice)]
        if job.forced:
            command.append("--force")
        return command + list(self.config.job_args)

    async def _spawn(self, command: list[str], log_file: Path) -> asyncio.subprocess.Process:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as output:
            return await asyncio.create_subprocess_exec(
                *command,
                env=dict(self.config.environment),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the worker, which stops the job itself
            )

    async def _job(self, job_id: int) -> RetrainJob:
        job = await self.store.get_retrain_job(job_id)
        if job is None:
            raise RuntimeError(f"retrain job {job_id} disappeared from the database")
        return job

    async def _report(self, job: RetrainJob) -> None:
        """Like the bot's runner, report only to an admin: the report's pictures show people's photos.
        A worker knows who is one from its own ADMIN_IDS; without any it reports to whoever asked."""
        assert job.chat_id is not None
        language = job.language or "en"
        admins = self.config.admin_ids
        told = not admins or job.requested_by is None or job.requested_by in admins
        if not told:
            logger.info(
                "retrain job %d: user %s is no longer an admin; no report sent", job.id, job.requested_by
            )
        if job.status == "failed":
            await tell_failed(self.bot, job, self.models, tell=told)
            return
        if not told:
            return
        note = ""
        if job.decision == "promote":
            note = "\n" + text(
                language, "retrain_serving_now", model=job.model, version=job.candidate_version
            )
        await send_report(self.bot, job.chat_id, language, job, self.config.data_dir, note)


@dataclass
class _Follow:
    """One job's life on the worker: renew the lease, edit the progress message, see the process out."""

    worker: RetrainWorker
    job: RetrainJob
    process: asyncio.subprocess.Process
    shown: str | None = None
    clock: TimeLeft = field(default_factory=TimeLeft)
    stopped: bool = False  # SIGTERM sent to the job
    held_until: float = 0.0  # the lease as last renewed, by the event loop's clock
    renewed: float = 0.0
    failed_here: bool = False  # this worker marked it failed (its process ended without finishing)

    async def run(self) -> RetrainJob:
        config, loop = self.worker.config, asyncio.get_running_loop()
        tick = min(config.poll_s, config.lease_s / 4)
        self.held_until = loop.time() + config.lease_s  # by this worker's clock: the lease as last renewed
        self.renewed = loop.time()
        while True:
            exited = await _exited_within(self.process, tick)
            if self.worker.stopping.is_set():
                self._stop("the worker is stopping")
            try:
                job = await self._tick(exited)
            except Exception:  # the database is away: the job goes on while the lease holds
                logger.exception("retrain job %d: its row could not be read or written", self.job.id)
                if loop.time() > self.held_until:
                    self._stop("its lease ran out")
                if exited:
                    await asyncio.sleep(tick)
                continue
            if not job.active:
                if not exited:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.process.wait(), 30)
                return job

    async def _tick(self, exited: bool) -> RetrainJob:
        """Renew the lease when due, fail the job if its process ended without finishing it, show it."""
        store, config, now = self.worker.store, self.worker.config, asyncio.get_running_loop().time()
        if not exited and now - self.renewed >= config.lease_s / 4:
            self.renewed = now
            if await store.renew_retrain_lease(self.job.id, self.worker.name, config.lease_s):
                self.held_until = now + config.lease_s
            elif (await self.worker._job(self.job.id)).status == "failed":  # by whoever saw it expire
                self._stop("its lease is lost")
        job = await self.worker._job(self.job.id)
        if job.active and exited:
            self.failed_here = await store.fail_retrain_job(job.id, self._unfinished())
            job = await self.worker._job(job.id)
        await self._show(job)
        return job

    def _unfinished(self) -> str:
        """Why the job's process ended without finishing the job. Stopped by this worker, it is what the
        job itself says when it gets there: its SIGTERM becomes a SystemExit in the job, and one raised
        inside a Keras fit can end in TensorFlow's teardown as another signal (measured: SIGABRT,
        "free(): invalid next size") before the job records why."""
        ended = describe_exit(self.process.returncode)
        if self.stopped:
            logger.warning("retrain job %d: its process %s after it was stopped", self.job.id, ended)
            return f"stopped by signal {signal.SIGTERM.name}"
        return f"the job process {ended} before finishing"

    def _stop(self, why: str) -> None:
        if self.stopped or self.process.returncode is not None:
            return
        logger.warning("retrain job %d: stopping it (%s)", self.job.id, why)
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        self.stopped = True

    async def _show(self, job: RetrainJob) -> None:
        if job.chat_id is None or job.message_id is None or (job.lease_expired and not self.failed_here):
            return  # no message yet (the bot is sending it), or whoever failed the job has shown it
        self.clock.observe(job)
        shown = progress_text(job, self.clock.seconds_left(), language=job.language or "en")
        if shown != self.shown:
            await edit_progress(self.worker.bot, job.chat_id, job.message_id, shown)
            self.shown = shown


async def _exited_within(process: asyncio.subprocess.Process, seconds: float) -> bool:
    if process.returncode is not None:
        return True
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        return False
    return True
