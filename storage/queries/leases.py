"""SQL about retraining jobs that `photobot worker` processes run: the claim, the lease, its expiry.

A job queued for workers (`runner = 'worker'`) waits until one worker claims it: the claim, the check
that no job of the same model runs (one per model, cluster-wide) and the switch to 'running' happen in
one transaction under the write lock (SQLite's; on PostgreSQL `BEGIN IMMEDIATE` takes a transaction
advisory lock), so two workers polling at once never both get it, on either backend. The claiming
worker writes its name (`worker`: host/pid/tag) and how long it holds the job (`lease_until`), and
renews the lease while the job runs; a lease that runs out means the worker died, was killed or lost
the database, and whoever sees it first (another worker, a bot at its start or before /retrain)
marks the job failed with that reason. Times are each machine's clock: keep them in step (NTP).

Write functions run inside their caller's transaction and never commit (see `storage.sql`).
"""

from __future__ import annotations

import time

from storage.dialect import Connection
from storage.queries.jobs import get_job
from storage.records import RetrainJob


def work_to_do(db: Connection, *, now: float) -> tuple[int, int]:
    """(jobs queued for workers, running worker jobs whose lease ran out): a plain read, so that idle
    workers polling take no write lock."""
    row = db.execute(
        """SELECT sum(CASE WHEN status = 'queued' THEN 1 ELSE 0 END),
                  sum(CASE WHEN status = 'running' AND lease_until < ? THEN 1 ELSE 0 END)
           FROM retrain_jobs WHERE runner = 'worker' AND status IN ('queued', 'running')""",
        (now,),
    ).fetchone()
    return int(row[0] or 0), int(row[1] or 0)


def claim_job(db: Connection, *, worker: str, lease_s: float, now: float) -> RetrainJob | None:
    """The oldest job queued for workers whose model has no job running, now `worker`'s; None if none.

    Run under the write lock (`BEGIN IMMEDIATE`): the check and the update see the same rows.
    """
    row = db.execute(
        """SELECT q.id FROM retrain_jobs AS q
           WHERE q.status = 'queued' AND q.runner = 'worker'
               AND NOT EXISTS (
                   SELECT 1 FROM retrain_jobs AS r WHERE r.model = q.model AND r.status = 'running'
               )
           ORDER BY q.id LIMIT 1"""
    ).fetchone()
    if row is None:
        return None
    db.execute(
        """UPDATE retrain_jobs SET status = 'running', worker = ?, lease_until = ?, started_at = ?,
               updated_at = ? WHERE id = ? AND status = 'queued'""",
        (worker, now + lease_s, now, now, row[0]),
    )
    return get_job(db, row[0])


def renew_lease(db: Connection, job_id: int, *, worker: str, lease_s: float, now: float) -> bool:
    """`worker` still runs the job: its lease holds `lease_s` more. False when the job is no longer its
    own and running (it finished, or its lease ran out and someone marked it failed)."""
    changed = db.execute(
        """UPDATE retrain_jobs SET lease_until = ?
           WHERE id = ? AND worker = ? AND status = 'running'""",
        (now + lease_s, job_id, worker),
    ).rowcount
    return changed > 0


def expire_leases(db: Connection, *, now: float) -> list[RetrainJob]:
    """Mark failed every running worker job whose lease ran out; the jobs as they are now (failed)."""
    rows = db.execute(
        """SELECT id, worker, lease_until FROM retrain_jobs
           WHERE status = 'running' AND runner = 'worker' AND lease_until < ? ORDER BY id""",
        (now,),
    ).fetchall()
    expired = []
    for job_id, worker, lease_until in rows:
        db.execute(
            """UPDATE retrain_jobs SET status = 'failed', error = ?, updated_at = ?, finished_at = ?
               WHERE id = ? AND status = 'running'""",
            (lease_expired(worker, lease_until, now), now, now, job_id),
        )
        job = get_job(db, job_id)
        assert job is not None
        expired.append(job)
    return expired


def lease_expired(worker: str | None, lease_until: float | None, now: float) -> str:
    """The error of a job whose worker stopped renewing its lease (stored in the row, shown to the admin)."""
    if lease_until is None:
        return f"its worker {worker} never renewed its lease"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(lease_until))
    return (
        f"its worker {worker} stopped renewing its lease (it ran out at {since}, {now - lease_until:.0f} s "
        "before this check): the worker died, was killed or lost the database"
    )
