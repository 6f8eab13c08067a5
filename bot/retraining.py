"""The bot's side of retraining: start the job process, show its progress in one message, report, hot-swap.

`/retrain` (admins only; the handler is in `bot.handlers.admin`) queues a job in the jobs table — one at
a time, a second request is told which job runs — and starts `photobot retrain --model … --job-id N`
as a separate, lower-priority process: the bot never trains and keeps answering photos with the
serving model throughout. A watcher task polls the jobs table and edits ONE progress message (stage,
epoch, a text progress bar, accuracy, time left). When the job ends it sends the report text and its
pictures; on promotion the running Classifier hot-swaps to the new version (`await classifier.reload`).
A job process that dies without finishing (killed, crashed) is marked failed with how it ended; the
serving version is untouched because promotion is the job's last, atomic step. A job that could not
start (its message or its process failed), or whose process went away while the bot was down, is marked
failed too — at the bot's start and before each /retrain — so it never blocks the next one. The job
process gets no bot token: it never talks to Telegram.

The jobs table also says who shows a job's progress (`watcher`, its heartbeat `watched_at`), in which
chat, message and language, so it outlives the bot process that started the job: a bot that stops
lets go of its jobs (they run on), and the next bot process on that machine takes over the job whose
process still runs (`adopt`), edits the same message and sends the report; a job that ended while no
bot process watched it is reported at that start too (`report_ended_unwatched`). While a bot process
watches a job, the others (other replicas on one database) leave it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram.error import TelegramError

from bot.redaction import redact
from bot.retrain_progress import TimeLeft, busy_text, caption, describe_exit, failed_text, progress_text
from bot.texts import text
from storage.records import new_watcher, watcher_host, watcher_pid

if TYPE_CHECKING:
    from telegram import Bot

    from bot.config import RetrainConfig
    from bot.services import Services
    from storage.database import Store
    from storage.records import RetrainJob

logger = logging.getLogger(__name__)

KEY = "retraining"
MAX_TEXT = 4000  # Telegram's limit is 4096 characters per message
# A job that ended while no bot watched it is reported at the next start of a bot on its machine, if
# that comes within a day: an older report would only puzzle the admin.
REPORT_UNWATCHED_WITHIN_S = 24 * 3600.0
HEARTBEAT_S = 10.0  # how often a watcher says it still watches (Store.WATCH_TIMEOUT_S is far longer)


@dataclass
class AdoptedProcess:
    """A job process this bot did not start (it took the job over): alive while its pid is. Its exit
    code is not ours to read."""

    pid: int
    returncode: int | None = None

    async def wait(self) -> int | None:
        while _alive(self.pid):
            await asyncio.sleep(0.2)
        return None

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)


@dataclass
class RunningJob:
    job_id: int
    model: str
    chat_id: int
    message_id: int
    process: asyncio.subprocess.Process | AdoptedProcess
    task: asyncio.Task | None = None
    language: str = "en"  # the admin's who asked: progress and report are in it


@dataclass
class RetrainRunner:
    """Starts and watches job processes. Kept in `application.bot_data["retraining"]`.

    `extra_args` are appended to the job's command line (tests pass small data options such as
    `--limit`); `poll_s` is how often the jobs table is read.
    """

    config: RetrainConfig
    extra_args: Sequence[str] = ()
    poll_s: float = 1.0
    nice: int = 10  # the job runs at lower CPU priority than the bot
    python: str = sys.executable
    running: dict[int, RunningJob] = field(default_factory=dict)
    watcher: str = field(default_factory=new_watcher)  # this runner's name in the jobs table
    _store: Store | None = field(default=None, init=False, repr=False)  # to let go of its jobs at close
    # One start at a time: recovery must never take a job that another /retrain is still starting.
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def start(
        self,
        found: Services,
        bot: Bot,
        model: str,
        *,
        chat_id: int,
        requested_by: int | None,
        force: bool = False,
        language: str = "en",
    ) -> RetrainJob | None:
        """Queue and start a job, or tell the admin which job already runs (returns None then).

        A job that cannot start (its message cannot be sent, its process cannot be spawned) is marked
        failed at once; one left behind by a crash or a kill is marked failed here before queueing, so
        no job without a process blocks /retrain.
        """
        from bot import retrain_workers  # it builds on this module's texts

        async with self._starting:
            self._store = found.store
            await self.recover(found)
            await retrain_workers.expire(found.store, bot, found.model_store)
            if self.config.external_workers:  # RETRAIN_WORKERS=external: a `photobot worker` runs it
                return await retrain_workers.enqueue(
                    found,
                    bot,
                    model,
                    chat_id=chat_id,
                    requested_by=requested_by,
                    force=force,
                    language=language,
                )
            return await self._start(found, bot, model, chat_id, requested_by, force, language)

    async def recover(self, found: Services) -> list[int]:
        """Mark failed the queued or running job whose process is gone (not one this runner watches)."""
        failed = await found.store.fail_abandoned_jobs(keep=self.running)
        for job_id in failed:
            logger.warning("retrain job %d had no process left: marked failed", job_id)
        return failed

    async def _start(
        self,
        found: Services,
        bot: Bot,
        model: str,
        chat_id: int,
        requested_by: int | None,
        force: bool,
        language: str,
    ) -> RetrainJob | None:
        announced = await announce_job(
            found.store,
            bot,
            model,
            chat_id=chat_id,
            requested_by=requested_by,
            language=language,
            watcher=self.watcher,
        )
        if announced is None:
            return None
        job, message_id = announced
        command = self.command(model, job.id, force)
        try:
            process = await self._spawn(command, job_log_path(self.config.data_dir, job.id))
        except OSError as error:
            await found.store.fail_retrain_job(job.id, f"the job process could not start: {error}")
            failed = text(language, "retrain_could_not_start", model=model, error=error)
            await edit_progress(bot, chat_id, message_id, failed)
            await found.store.mark_retrain_reported(job.id)
            return None
        logger.info(
            "retrain job %d (%s) started as pid %d: %s", job.id, model, process.pid, " ".join(command)
        )
        running = RunningJob(job.id, model, chat_id, message_id, process, language=language)
        running.task = asyncio.create_task(self._watch(found, bot, running), name=f"retrain-job-{job.id}")
        self.running[job.id] = running
        return job

    async def adopt(self, found: Services, bot: Bot) -> RetrainJob | None:
        """Take over the job a stopped bot process on this machine left running: its progress message,
        its report and the hot-swap. None when there is none, or another bot process took it first."""
        job = await found.store.active_retrain_job()
        if (
            job is None
            or job.id in self.running
            or job.pid is None
            or job.chat_id is None
            or job.message_id is None
            or watcher_host(job.watcher) != watcher_host(self.watcher)  # its pid means nothing here
            or not _alive(job.pid)
            or not await found.store.watch_retrain_job(
                job.id, self.watcher, take_over=True, from_dead=self._dead_watcher(job)
            )
        ):
            return None
        self._store = found.store
        logger.info("took over retrain job %d (%s), pid %d, from %s", job.id, job.model, job.pid, job.watcher)
        running = RunningJob(
            job.id,
            job.model,
            job.chat_id,
            job.message_id,
            AdoptedProcess(job.pid),
            language=job.language or "en",
        )
        running.task = asyncio.create_task(self._watch(found, bot, running), name=f"retrain-job-{job.id}")
        self.running[job.id] = running
        return job

    async def _spawn(self, command: list[str], log_file: Path) -> asyncio.subprocess.Process:
        """The job's process, its output appended to its own log file."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as output:
            return await asyncio.create_subprocess_exec(
                *command,
                env=dict(self.config.environment),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to the bot does not kill the job
            )

    def command(self, model: str, job_id: int, force: bool) -> list[str]:
        command = [self.python, "-m", "photobot", "retrain", "--model", model, "--job-id", str(job_id)]
        if self.nice:
            command += ["--nice", str(self.nice)]
        if force:
            command.append("--force")
        return command + list(self.extra_args)

    async def wait(self, job_id: int) -> None:
        """Until the watcher of a job has sent the report (tests, shutdown)."""
        running = self.running.get(job_id)
        if running is not None and running.task is not None:
            await asyncio.shield(running.task)

    async def close(self, *, stop_jobs: bool = False) -> None:
        """Stop watching (on shutdown). Jobs go on in their own processes unless `stop_jobs`, and the
        next bot process may take them over."""
        if self._store is not None and self.running and not stop_jobs:  # stopped jobs are nobody's to report
            with contextlib.suppress(Exception):  # a closed store: the watch runs out in WATCH_TIMEOUT_S
                await self._store.unwatch_retrain_jobs(list(self.running), self.watcher)
        for running in list(self.running.values()):
            if stop_jobs and running.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    running.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(running.process.wait(), 20)
            if running.task is not None:
                running.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running.task
        self.running.clear()

    async def _watch(self, found: Services, bot: Bot, running: RunningJob) -> None:
        try:
            job = await self._follow(found, bot, running)
            await self._finish(found, bot, job, running.chat_id, running.language)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("watching retrain job %d failed", running.job_id)
        finally:
            self.running.pop(running.job_id, None)

    async def _follow(self, found: Services, bot: Bot, running: RunningJob) -> RetrainJob:
        """Edit the progress message as the job advances, until it is no longer active."""
        shown = None
        clock = TimeLeft()
        said = asyncio.get_running_loop().time()
        while True:
            exited = await _exited_within(running.process, self.poll_s)
            if asyncio.get_running_loop().time() - said >= HEARTBEAT_S:  # other bot processes leave it alone
                await found.store.watch_retrain_job(running.job_id, self.watcher)
                said = asyncio.get_running_loop().time()
            job = await found.store.get_retrain_job(running.job_id)
            if job is None:
                raise RuntimeError(f"retrain job {running.job_id} disappeared from the database")
            if job.active and exited:
                await found.store.fail_retrain_job(
                    job.id, f"the job process {describe_exit(running.process.returncode)} before finishing"
                )
                job = await found.store.get_retrain_job(running.job_id)
                assert job is not None
            clock.observe(job)
            shown_now = progress_text(job, clock.seconds_left(), language=running.language)
            if shown_now != shown:
                await edit_progress(bot, running.chat_id, running.message_id, shown_now)
                shown = shown_now
            if not job.active:
                if not exited:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(running.process.wait(), 30)
                return job

    async def _finish(self, found: Services, bot: Bot, job: RetrainJob, chat_id: int, language: str) -> None:
        """Hot-swap on promotion, then send the report and its pictures to the admin who asked, if they
        still are one: its pictures show people's photos."""
        told = job.requested_by is None or found.is_admin(job.requested_by)
        if not told:
            logger.info(
                "retrain job %d: user %s is no longer an admin; no report sent", job.id, job.requested_by
            )
        if job.status == "failed":
            if told:
                serving = found.model_store.active_version(job.model)
                await bot.send_message(chat_id, failed_text(job, serving, language))
            await found.store.mark_retrain_reported(job.id)
            return
        note = ""
        if job.decision == "promote":
            from inference.errors import ModelUnavailable

            try:
                version = await found.classifier.reload(job.model)
                found.refresh_labels()
                note = "\n" + text(language, "retrain_serving_now", model=job.model, version=version.version)
            except ModelUnavailable as error:
                note = "\n" + text(language, "retrain_not_loaded", error=error)
        if told:
            await send_report(bot, chat_id, language, job, self.config.data_dir, note)
        await found.store.mark_retrain_reported(job.id)

    def _dead_watcher(self, job: RetrainJob) -> str | None:
        """The bot process of this machine that watched `job` and died (killed: it could not let go),
        so that its job need not wait WATCH_TIMEOUT_S for another to take it over; None otherwise."""
        pid = watcher_pid(job.watcher)
        if watcher_host(job.watcher) != watcher_host(self.watcher) or pid is None or _alive(pid):
            return None
        return job.watcher

    async def report_ended_unwatched(self, found: Services, bot: Bot) -> list[RetrainJob]:
        """Finish the progress message and send the report of every job that ended while no bot process
        watched it (the one that started it had stopped, and none started before it ended) in the last
        REPORT_UNWATCHED_WITHIN_S; one bot process sends each. The jobs reported."""
        reported = []
        for job in await found.store.unreported_retrain_jobs(REPORT_UNWATCHED_WITHIN_S):
            if watcher_host(job.watcher) != watcher_host(self.watcher):  # its report files are there
                continue
            if job.chat_id is None or job.message_id is None:
                continue
            dead = self._dead_watcher(job)
            if job.watched_at is not None and dead is None:
                continue  # its bot process lives: it reports the job itself
            if not await found.store.claim_retrain_report(job.id, self.watcher, from_dead=dead):
                continue  # another bot process starting beside this one took it
            language = job.language or "en"
            logger.info(
                "retrain job %d (%s) ended while no bot watched it: reporting it now", job.id, job.model
            )
            try:
                await edit_progress(bot, job.chat_id, job.message_id, progress_text(job, language=language))
                await self._finish(found, bot, job, job.chat_id, language)
            except Exception:  # a Bot API outage: the job's row and report files say it all
                logger.exception("reporting retrain job %d failed", job.id)
            reported.append(job)
        return reported


# ------------------------------------------------------------------------------------------- helpers


def runner(bot_data: dict[str, Any], config: RetrainConfig) -> RetrainRunner:
    """The application's runner, created on first use."""
    found = bot_data.get(KEY)
    if found is None:
        found = bot_data[KEY] = RetrainRunner(config)
    return found


async def adopt(bot_data: dict[str, Any], found: Services, bot: Bot) -> RetrainJob | None:
    """At the bot's start: report the jobs that ended while no bot process watched them, and take over
    the job a stopped bot process on this machine left running."""
    if await found.store.unreported_retrain_jobs(REPORT_UNWATCHED_WITHIN_S):
        await runner(bot_data, found.retrain).report_ended_unwatched(found, bot)
    job = await found.store.active_retrain_job()
    if job is None or job.pid is None or job.message_id is None:  # nothing to take over: no runner made
        return None
    return await runner(bot_data, found.retrain).adopt(found, bot)


async def start_retrain(
    found: Services,
    bot_data: dict[str, Any],
    bot: Bot,
    model: str,
    *,
    chat_id: int,
    requested_by: int | None,
    force: bool = False,
    language: str = "en",
) -> RetrainJob | None:
    """What the /retrain handler calls."""
    return await runner(bot_data, found.retrain).start(
        found, bot, model, chat_id=chat_id, requested_by=requested_by, force=force, language=language
    )


async def announce_job(
    store: Store,
    bot: Bot,
    model: str,
    *,
    chat_id: int,
    requested_by: int | None,
    language: str,
    watcher: str | None = None,
    runner: str = "local",
    forced: bool = False,
) -> tuple[RetrainJob, int] | None:
    """Queue a job and send its progress message, whose id goes into the job's row (the bot's runner
    and the workers' queue alike). None, and the admin is told which job is in the way, when one is
    queued or running; a job whose message cannot be sent is marked failed, and the error goes on."""
    from storage import JobAlreadyActive

    try:
        job = await store.create_retrain_job(
            model,
            requested_by=requested_by,
            chat_id=chat_id,
            language=language,
            watcher=watcher,
            runner=runner,
            forced=forced,
        )
    except JobAlreadyActive as error:
        await bot.send_message(chat_id, busy_text(error.job, language))
        return None
    try:
        message = await bot.send_message(chat_id, progress_text(job, language=language))
    except Exception as error:
        await store.fail_retrain_job(job.id, f"its start message could not be sent: {redact(str(error))}")
        raise
    await store.set_retrain_message(job.id, message.message_id)
    return job, message.message_id


async def send_report(
    bot: Bot, chat_id: int, language: str, job: RetrainJob, data_dir: Path, note: str = ""
) -> None:
    """The finished job's report (its report.txt under `data_dir`, where the job wrote it) with `note`
    added, then its pictures (the bot's watcher and `photobot worker` send it alike)."""
    report_dir = report_path(data_dir, job.metrics.get("report_dir"))
    report = report_dir and _read_text(report_dir / "report.txt")
    report = report or text(language, "retrain_ended", model=job.model, reason=job.reason)
    await bot.send_message(chat_id, (report + note)[:MAX_TEXT])
    for path in job.metrics.get("report_images", []):
        image = report_path(data_dir, path)
        if image is None:
            continue
        try:
            data = await asyncio.to_thread(image.read_bytes)
        except OSError as error:
            logger.warning("report image %s is missing: %s", image, error)
            continue
        await bot.send_photo(chat_id, data, caption=caption(image.stem, language))


def job_log_path(data_dir: Path, job_id: int) -> Path:
    return Path(data_dir) / "logs" / f"retrain-job{job_id}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


async def _exited_within(process: asyncio.subprocess.Process | AdoptedProcess, seconds: float) -> bool:
    if process.returncode is not None:
        return True
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def edit_progress(bot: Bot, chat_id: int, message_id: int, text: str) -> None:
    try:
        await bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)
    except TelegramError as error:  # "message is not modified", a deleted message: not worth failing for
        logger.info("progress message %d not edited: %s", message_id, error)


def report_path(data_dir: Path, path: object) -> Path | None:
    """A report path read from the jobs table, or None unless it lies inside DATA_DIR/reports.

    The table is data, not a promise: a path elsewhere (`/etc/…`, `../…`, a symlink out) is never
    read and sent to the admin chat.
    """
    if not isinstance(path, str) or not path:
        return None
    reports = (Path(data_dir) / "reports").resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(reports):
        logger.warning("report path %r is outside %s: not sent", path, reports)
        return None
    return resolved


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
