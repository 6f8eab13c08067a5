"""The `Store` calls about models: taught models, labels added to built-in models, retraining jobs and
the model events log.

`Store` inherits them; they are kept apart from the calls about people and photos (`storage.database`)
so each file reads as one subject. The SQL is in `storage.taught`, `storage.added_labels` and
`storage.queries.jobs`.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from storage import added_labels as label_sql
from storage import sql, taught
from storage.added_labels import AddedLabel
from storage.group_commit import GroupCommit
from storage.queries import leases
from storage.records import ModelEvent, RetrainJob, watcher_host

# A bot process showing a job's progress says so at least this often; one silent longer has stopped.
WATCH_TIMEOUT_S = 120.0
# A job on another machine, unwatched and silent this long (no progress written), is taken for gone.
SILENT_S = 900.0


class ModelCalls(GroupCommit):
    """Taught models, retraining jobs and model events, over `GroupCommit`'s reads and writes."""

    # ------------------------------------------------------------ taught models (storage.taught)

    async def taught_models(self, *, deleted: bool = False) -> list[taught.TaughtModel]:
        """The live taught models (with `deleted`, the deleted ones too: their names stay taken)."""
        return await self._read(functools.partial(taught.taught_models, deleted=deleted))

    async def create_taught_model(
        self, name: str, labels: Sequence[taught.TaughtLabel], created_by: int | None
    ) -> taught.TaughtModel:
        """Raises TaughtModelExists when the name was ever used by a taught model."""
        return await self._write(
            functools.partial(
                taught.create_taught_model, name=name, labels=labels, created_by=created_by, now=time.time()
            )
        )

    async def set_taught_labels(
        self, name: str, labels: Sequence[taught.TaughtLabel], expected: Sequence[str] | None = None
    ) -> taught.TaughtModel:
        """Raises TaughtLabelsChanged when the model's labels are no longer `expected`."""
        return await self._write(
            functools.partial(taught.set_taught_labels, name=name, labels=labels, expected=expected)
        )

    async def delete_taught_model(self, name: str) -> bool:
        return await self._write(functools.partial(taught.delete_taught_model, name=name, now=time.time()))

    # ------------------------------------------------------------ labels added to built-in models

    async def added_labels(self, model: str | None = None) -> list[AddedLabel]:
        """Labels added to built-in models from the chat, removed ones too (storage.added_labels)."""
        return await self._read(functools.partial(label_sql.added_labels, model=model))

    async def add_model_label(self, model: str, label: str, added_by: int | None) -> AddedLabel:
        """Raises LabelAlreadyAdded when `model` has the added label already."""
        return await self._write(
            functools.partial(
                label_sql.add_label, model=model, label=label, added_by=added_by, now=time.time()
            )
        )

    async def remove_model_label(self, model: str, label: str) -> bool:
        return await self._write(
            functools.partial(label_sql.remove_label, model=model, label=label, now=time.time())
        )

    # ------------------------------------------------------------ retraining jobs and model events

    async def create_retrain_job(
        self,
        model: str,
        *,
        requested_by: int | None = None,
        chat_id: int | None = None,
        message_id: int | None = None,
        language: str | None = None,
        watcher: str | None = None,
        runner: str = "local",
        forced: bool = False,
    ) -> RetrainJob:
        """Queue a job; raises `JobAlreadyActive` (with `.job`) if one is queued or running. `watcher`
        (`records.new_watcher()`) is the bot process that shows its progress, in `language`. With
        `runner="worker"` a `photobot worker` runs it, and only a job of the same model is in its way."""
        return await self._write(
            functools.partial(
                sql.create_job,
                model=model,
                requested_by=requested_by,
                chat_id=chat_id,
                message_id=message_id,
                now=time.time(),
                language=language,
                watcher=watcher,
                runner=runner,
                forced=forced,
            )
        )

    async def set_retrain_message(self, job_id: int, message_id: int) -> None:
        """The message that shows the job's progress: any bot process can go on editing it."""
        await self._write(functools.partial(sql.set_job_message, job_id=job_id, message_id=message_id))

    async def watch_retrain_job(
        self, job_id: int, watcher: str, *, take_over: bool = False, from_dead: str | None = None
    ) -> bool:
        """`watcher` shows the job's progress (said again at least every WATCH_TIMEOUT_S). With
        `take_over`, only if no bot process has watched it for WATCH_TIMEOUT_S, or the one watching it
        is `from_dead` (a process the caller knows died): True when it won."""
        now = time.time()
        return await self._write(
            functools.partial(
                sql.watch_job,
                job_id=job_id,
                watcher=watcher,
                now=now,
                unwatched_before=now - WATCH_TIMEOUT_S if take_over else None,
                from_watcher=from_dead,
            )
        )

    async def unreported_retrain_jobs(self, within_s: float) -> list[RetrainJob]:
        """Jobs that ended in the last `within_s` seconds with no report sent: it is owed if the bot
        process that watched them let go of them (`watched_at` None) or died."""
        return await self._read(functools.partial(sql.unreported_jobs, since=time.time() - within_s))

    async def claim_retrain_report(self, job_id: int, watcher: str, *, from_dead: str | None = None) -> bool:
        """`watcher` sends that job's report (nobody watches it, or `from_dead`, a process that died,
        did): True for one bot process only."""
        return await self._write(
            functools.partial(
                sql.claim_report, job_id=job_id, watcher=watcher, now=time.time(), from_watcher=from_dead
            )
        )

    async def mark_retrain_reported(self, job_id: int) -> None:
        """The job's report is sent (or it had nobody to go to): no bot process sends it again."""
        await self._write(functools.partial(sql.mark_reported, job_id=job_id, now=time.time()))

    async def unwatch_retrain_jobs(self, job_ids: Collection[int], watcher: str) -> None:
        """`watcher` stops (its bot shuts down, the jobs go on): another bot process may take them over."""
        await self._write(functools.partial(sql.unwatch_jobs, job_ids=list(job_ids), watcher=watcher))

    async def start_retrain_job(self, job_id: int, pid: int, worker: str | None = None) -> RetrainJob:
        return await self._write(
            functools.partial(sql.start_job, job_id=job_id, pid=pid, now=time.time(), worker=worker)
        )

    async def update_retrain_job(
        self,
        job_id: int,
        *,
        stage: str | None = None,
        progress: float | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> RetrainJob:
        return await self._write(
            functools.partial(
                sql.update_job, job_id=job_id, stage=stage, progress=progress, detail=detail, now=time.time()
            )
        )

    async def finish_retrain_job(
        self,
        job_id: int,
        *,
        status: str,
        metrics: Mapping[str, Any] | None = None,
        candidate_version: int | None = None,
        decision: str | None = None,
        reason: str | None = None,
        error: str | None = None,
    ) -> RetrainJob:
        """`status` is "succeeded", "rejected" or "failed"."""
        return await self._write(
            functools.partial(
                sql.finish_job,
                job_id=job_id,
                status=status,
                metrics=metrics,
                candidate_version=candidate_version,
                decision=decision,
                reason=reason,
                error=error,
                now=time.time(),
            )
        )

    async def fail_retrain_job(self, job_id: int, error: str) -> bool:
        """Mark a job failed if it is still queued or running (its process died); True if it was."""
        failed = await self._write(
            functools.partial(sql.fail_jobs, job_ids=[job_id], error=error, now=time.time())
        )
        return bool(failed)

    async def fail_abandoned_jobs(self, keep: Collection[int] = ()) -> list[int]:
        """Jobs still marked active whose process is gone are marked failed (at start, before /retrain).

        A queued job has no pid until its process claims it: the bot passes the jobs it watches itself
        as `keep`, and a job another bot process watches (it said so within WATCH_TIMEOUT_S) is left
        alone too; any other queued job was left behind by a start that failed. A job's pid means
        something only on the machine of the bot process that started it (its watcher's host): a job
        of another machine that nobody watches is failed once it has said nothing for SILENT_S.
        """
        failed: list[int] = []
        for job in await self._read(sql.active_jobs):
            error = abandoned(job, keep, now=time.time(), host=socket.gethostname())
            if error is not None:
                failed += await self._write(
                    functools.partial(sql.fail_jobs, job_ids=[job.id], error=error, now=time.time())
                )
        return failed

    async def get_retrain_job(self, job_id: int) -> RetrainJob | None:
        return await self._read(functools.partial(sql.get_job, job_id=job_id))

    async def active_retrain_job(self, model: str | None = None) -> RetrainJob | None:
        """The oldest queued or running job (of `model`, when given)."""
        return await self._read(functools.partial(sql.active_job, model=model))

    # ------------------------------------------------------------ jobs run by workers (queries.leases)

    async def worker_jobs_to_do(self) -> tuple[int, int]:
        """(jobs queued for workers, worker jobs whose lease ran out), read without the write lock."""
        return await self._read(functools.partial(leases.work_to_do, now=time.time()))

    async def claim_retrain_job(self, worker: str, lease_s: float) -> RetrainJob | None:
        """The oldest job queued for workers whose model has none running, now `worker`'s for `lease_s`."""
        return await self._write(
            functools.partial(leases.claim_job, worker=worker, lease_s=lease_s, now=time.time())
        )

    async def renew_retrain_lease(self, job_id: int, worker: str, lease_s: float) -> bool:
        """False when the job is no longer `worker`'s to run (finished, or failed by someone else)."""
        return await self._write(
            functools.partial(
                leases.renew_lease, job_id=job_id, worker=worker, lease_s=lease_s, now=time.time()
            )
        )

    async def expire_retrain_leases(self) -> list[RetrainJob]:
        """Mark failed the running worker jobs whose lease ran out (their worker is gone), with why."""
        return await self._write(functools.partial(leases.expire_leases, now=time.time()))

    async def recent_retrain_jobs(self, model: str | None = None, limit: int = 10) -> list[RetrainJob]:
        return await self._read(functools.partial(sql.recent_jobs, model=model, limit=limit))

    async def record_model_event(
        self,
        model: str,
        action: str,
        *,
        from_version: int | None,
        to_version: int | None,
        actor: int | None = None,
        reason: str | None = None,
        job_id: int | None = None,
    ) -> int:
        """Log a promotion, rollback, rejection or seeding ("promote" / "rollback" / "reject" / "seed")."""
        return await self._write(
            functools.partial(
                sql.record_model_event,
                model=model,
                action=action,
                from_version=from_version,
                to_version=to_version,
                actor=actor,
                reason=reason,
                job_id=job_id,
                now=time.time(),
            )
        )

    async def model_events(
        self, model: str | None = None, *, action: str | None = None, limit: int = 20
    ) -> list[ModelEvent]:
        """Newest first."""
        return await self._read(functools.partial(sql.model_events, model=model, action=action, limit=limit))


def abandoned(job: RetrainJob, keep: Collection[int], *, now: float, host: str) -> str | None:
    """Why an active job counts as abandoned (its error), or None while something may still run it.
    A worker's job is judged by its lease alone (`expire_retrain_leases`): its pid is on another machine."""
    if job.runner == "worker":
        return None
    if job.id in keep or (job.watched_at is not None and now - job.watched_at < WATCH_TIMEOUT_S):
        return None
    ran_on = watcher_host(job.watcher)
    if ran_on is not None and ran_on != host:
        if now - job.updated_at < SILENT_S:
            return None
        return f"no bot watched the job on {ran_on}, and it said nothing for {SILENT_S / 60:.0f} min"
    if job.pid is None:
        return "the job never started (its start failed, or the bot stopped first)"
    if _process_alive(job.pid):
        return None
    return "the job's process ended without finishing (killed, crashed, or the bot restarted)"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
