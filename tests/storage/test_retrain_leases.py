"""Jobs that `photobot worker` processes run: claimed once however many workers race for them, one per
model at a time, held by a lease whose end fails the job with why — on SQLite and PostgreSQL.

Real databases (the `database` fixture: a SQLite file, or a fresh database on the throwaway server),
each worker its own store and connections, racing for real.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from storage import JobAlreadyActive, Store
from storage.connect import open_database
from storage.dialect import Connection, Database
from storage.queries import leases
from storage.records import RetrainJob
from tests.support.storage import execute, open_store

T = TypeVar("T")
LEASE_S = 60.0
T0 = 1_000_000.0  # the queries take the time: a lease runs out when a test says so, not a clock


def in_write(db: Connection, function: Callable[[Connection], T]) -> T:
    """`function` in a write transaction under the write lock, as the stores run their writes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = function(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


async def two_workers(tmp_path: Path, database: Database) -> tuple[Store, Store]:
    """Two workers' stores: separate connections (and images folders), one database."""
    return await open_store(tmp_path / "w1", database), await open_store(tmp_path / "w2", database)


async def test_two_workers_racing_claim_each_job_exactly_once(tmp_path: Path, database: Database) -> None:
    first, second = await two_workers(tmp_path, database)
    try:
        claimed: list[tuple[str, RetrainJob]] = []
        for round_ in range(8):  # one job, both claim at the same moment: one gets it
            queued = await first.create_retrain_job(f"model{round_}", runner="worker")
            got = await asyncio.gather(
                first.claim_retrain_job("w1", LEASE_S), second.claim_retrain_job("w2", LEASE_S)
            )
            winners = [(name, job) for name, job in zip(("w1", "w2"), got, strict=True) if job is not None]
            assert len(winners) == 1, got
            name, job = winners[0]
            assert (job.id, job.status, job.worker) == (queued.id, "running", name)
            claimed.append(winners[0])

        for index in range(12):  # many queued, both claiming in a loop until none is left
            await first.create_retrain_job(f"more{index}", runner="worker")

        async def drain(store: Store, name: str) -> list[int]:
            mine = []
            while (job := await store.claim_retrain_job(name, LEASE_S)) is not None:
                mine.append(job.id)
            return mine

        by_first, by_second = await asyncio.gather(drain(first, "w1"), drain(second, "w2"))
        assert not set(by_first) & set(by_second)
        assert (
            sorted(by_first + by_second)
            == [job.id for job in await first.recent_retrain_jobs(limit=12)][::-1]
        )
        rows = execute(
            database, "SELECT worker, count(*) FROM retrain_jobs WHERE status = 'running' GROUP BY worker"
        )
        assert sum(count for _, count in rows) == 20 and {worker for worker, _ in rows} <= {"w1", "w2"}
    finally:
        await first.close()
        await second.close()


async def test_one_job_per_model_runs_at_a_time_across_workers(tmp_path: Path, database: Database) -> None:
    first, second = await two_workers(tmp_path, database)
    try:
        digits = await first.create_retrain_job("digits", runner="worker", forced=True)
        assert (digits.status, digits.runner, digits.forced) == ("queued", "worker", True)
        with pytest.raises(JobAlreadyActive, match="one job per model") as busy:
            await second.create_retrain_job("digits", runner="worker")  # queued counts
        assert busy.value.job.id == digits.id
        assert (await first.claim_retrain_job("w1", LEASE_S)).id == digits.id
        with pytest.raises(JobAlreadyActive):
            await second.create_retrain_job("digits", runner="worker")  # running counts

        flowers = await second.create_retrain_job("flowers", runner="worker")  # another model: queued
        with pytest.raises(JobAlreadyActive, match="one job runs at a time"):
            await first.create_retrain_job("pets")  # a job the bot runs itself still waits for all
        # A second digits job queued behind the running one (an older PhotoBot queued it): the claim
        # passes over it to the flowers job, and takes it once the first digits job has ended.
        execute(
            database,
            """INSERT INTO retrain_jobs (model, status, created_at, updated_at, runner)
               VALUES ('digits', 'queued', 0, 0, 'worker')""",
        )
        assert (await second.claim_retrain_job("w2", LEASE_S)).id == flowers.id
        assert await second.claim_retrain_job("w2", LEASE_S) is None  # digits runs, flowers runs
        await first.finish_retrain_job(
            digits.id, status="succeeded", decision="skipped", reason="nothing new"
        )
        behind = await second.claim_retrain_job("w2", LEASE_S)
        assert behind is not None and (behind.model, behind.worker) == ("digits", "w2")
    finally:
        await first.close()
        await second.close()


def test_a_lease_renewed_holds_and_one_that_runs_out_fails_the_job_with_why(database: Database) -> None:
    db = open_database(database)
    try:
        in_write(
            db,
            lambda c: c.execute(
                "INSERT INTO retrain_jobs (model, status, created_at, updated_at, "
                "runner) VALUES ('digits', 'queued', 0, 0, 'worker')"
            ),
        )
        assert leases.work_to_do(db, now=T0) == (1, 0)  # what an idle worker reads, without the lock
        job = in_write(db, lambda c: leases.claim_job(c, worker="gpu1/77/ab", lease_s=LEASE_S, now=T0))
        assert job is not None and job.lease_until == T0 + LEASE_S
        assert in_write(
            db, lambda c: leases.renew_lease(c, job.id, worker="gpu1/77/ab", lease_s=LEASE_S, now=T0 + 30)
        )
        assert not in_write(
            db, lambda c: leases.renew_lease(c, job.id, worker="gpu2/1/cd", lease_s=LEASE_S, now=T0 + 31)
        )
        assert in_write(db, lambda c: leases.expire_leases(c, now=T0 + 80)) == []  # renewed to T0 + 90

        assert leases.work_to_do(db, now=T0 + 80) == (0, 0)
        assert leases.work_to_do(db, now=T0 + 95) == (0, 1)
        expired = in_write(db, lambda c: leases.expire_leases(c, now=T0 + 95))
        assert [j.id for j in expired] == [job.id]
        failed = expired[0]
        assert failed.status == "failed" and failed.finished_at == T0 + 95 and failed.lease_expired
        assert failed.error.startswith("its worker gpu1/77/ab stopped renewing its lease (it ran out at ")
        assert "5 s before this check): the worker died, was killed or lost the database" in failed.error
        assert not in_write(
            db, lambda c: leases.renew_lease(c, job.id, worker="gpu1/77/ab", lease_s=LEASE_S, now=T0 + 96)
        )
        assert in_write(db, lambda c: leases.expire_leases(c, now=T0 + 500)) == []  # failed once
    finally:
        db.close()


async def test_a_job_that_ends_by_itself_is_no_expired_lease_and_the_bot_leaves_worker_jobs_to_leases(
    tmp_path: Path, database: Database
) -> None:
    store = await open_store(tmp_path, database)
    try:
        job = await store.create_retrain_job("digits", runner="worker")
        await store.claim_retrain_job("gpu1/77/ab", LEASE_S)
        with pytest.raises(ValueError, match="not running for worker gpu2/1/cd"):
            await store.start_retrain_job(job.id, pid=1234, worker="gpu2/1/cd")
        # Its process (on the worker's machine) records its pid; that pid means nothing to this host, so
        # the bot's check of its own jobs' processes leaves it alone: the lease says whether it lives.
        started = await store.start_retrain_job(job.id, pid=dead_pid(), worker="gpu1/77/ab")
        assert (started.status, started.worker) == ("running", "gpu1/77/ab")
        assert await store.fail_abandoned_jobs() == []
        assert await store.expire_retrain_leases() == []  # the lease holds
        failed = await store.finish_retrain_job(job.id, status="failed", error="RetrainError: no data")
        assert not failed.lease_expired  # its own process failed it, within the lease
        assert await store.expire_retrain_leases() == []
    finally:
        await store.close()


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
