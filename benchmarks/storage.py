"""Storage benchmarks: durable write throughput under concurrency, and SIGKILL crash safety.

`photobot bench storage` runs them (photobot/commands/bench_storage.py); the crash run starts this
module as a child process (`python -m benchmarks.storage crash-writer DIR SEED [DATABASE]`) and kills it.
Each runs on a SQLite file in the data folder (the default) or on a PostgreSQL `database` URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.database import Store
from storage.dialect import Connection, Database, is_postgres_url, is_sqlite
from storage.images import TMP_DIR, TMP_SUFFIX, ImageStore

DIGITS = [str(d) for d in range(10)]


def fake_image(rng: random.Random, size: int) -> bytes:
    """Unique bytes that look like a JPEG to a format sniffer; the store never decodes them."""
    return b"\xff\xd8\xff\xe0" + rng.randbytes(size)


def _probabilities(rng: random.Random) -> list[tuple[str, float]]:
    weights = [rng.random() for _ in DIGITS]
    total = sum(weights)
    return sorted(((d, w / total) for d, w in zip(DIGITS, weights, strict=True)), key=lambda p: -p[1])


@dataclass(frozen=True)
class _Answer:
    """An engine answer's shape (inference's `Prediction`), without importing inference."""

    model: str | None
    version: int | None
    label: str | None
    confidence: float
    status: str
    top: list[tuple[str, float]]
    reason: str | None = None


def _answer(rng: random.Random) -> _Answer:
    top = _probabilities(rng)
    return _Answer("digits", 1, top[0][0], top[0][1], "ok", top)


# ------------------------------------------------------------------ throughput


@dataclass(frozen=True)
class ThroughputResult:
    tasks: int
    predictions: int
    seconds: float
    predictions_per_s: float
    writes_per_commit: float
    pair_p50_ms: float
    pair_p95_ms: float
    feedback_p50_ms: float  # one feedback's await, under the same load
    feedback_p95_ms: float
    rows_predictions: int
    rows_feedback: int
    lost: int
    duplicated: int
    with_images: bool


async def throughput(
    data_dir: Path,
    *,
    tasks: int = 50,
    predictions: int = 10_000,
    with_images: bool = False,
    max_batch: int = 256,
    seed: int = 0,
    database: Database | None = None,
) -> ThroughputResult:
    """`tasks` concurrent tasks each record predictions and their feedback, every write durable.

    Without `with_images` the photos are stored before the clock starts (the database's figure);
    with it, each prediction first stores a new 20 kB image (an fsynced file in the images cache, then
    its bytes in the row's transaction). `max_batch=1` turns group commit off (one transaction and one
    fsync per write), for comparison. `database`: a PostgreSQL URL (or another file) instead of
    `data_dir/photobot.sqlite3`.
    """
    rng = random.Random(seed)
    database = database or data_dir / "photobot.sqlite3"
    store = await Store.open(database, data_dir / "images", max_batch=max_batch)
    try:
        pool = []
        if not with_images:
            pool = [(await store.add_photo(fake_image(rng, 2_000), format="jpeg")).sha256 for _ in range(200)]
        per_task = [predictions // tasks + (1 if t < predictions % tasks else 0) for t in range(tasks)]
        acknowledged: list[int] = []
        pair_ms: list[float] = []
        feedback_ms: list[float] = []

        async def user(task: int) -> None:
            task_rng = random.Random(seed * 1000 + task)
            user_id = 10_000 + task
            for message_id in range(per_task[task]):
                started = time.perf_counter()
                answer = _answer(task_rng)
                if with_images:  # what the bot does: the new photo and its answer in one transaction
                    recorded = await store.record_photo_prediction(
                        fake_image(task_rng, 20_000),
                        format="jpeg",
                        prediction=answer,
                        user_id=user_id,
                        chat_id=user_id,
                        message_id=message_id,
                        latency_ms=10.0,
                        mode="auto",
                    )
                    prediction_id = recorded.prediction_id
                else:
                    prediction_id = await store.record_prediction(
                        user_id=user_id,
                        chat_id=user_id,
                        message_id=message_id,
                        photo_sha256=pool[task_rng.randrange(len(pool))],
                        model=answer.model,
                        version=answer.version,
                        label=answer.label,
                        confidence=answer.confidence,
                        probabilities=answer.top,
                        status=answer.status,
                        latency_ms=10.0,
                        mode="auto",
                    )
                correct = task_rng.random() < 0.7
                tapped = time.perf_counter()
                await store.record_feedback(
                    prediction_id,
                    user_id=user_id,
                    verdict="correct" if correct else "wrong",
                    true_label=None if correct else answer.top[1][0],
                )
                acknowledged.append(prediction_id)
                pair_ms.append((time.perf_counter() - started) * 1000)
                feedback_ms.append((time.perf_counter() - tapped) * 1000)

        batches_before, writes_before = store.batches, store.writes
        started = time.perf_counter()
        await asyncio.gather(*(user(t) for t in range(tasks)))
        seconds = time.perf_counter() - started
        writes_per_commit = (store.writes - writes_before) / max(1, store.batches - batches_before)
    finally:
        await store.close()
    rows_predictions, rows_feedback, lost = _count_rows(database, acknowledged)
    quantiles = statistics.quantiles(pair_ms, n=100)
    feedback_quantiles = statistics.quantiles(feedback_ms, n=100)
    return ThroughputResult(
        tasks=tasks,
        predictions=len(acknowledged),
        seconds=seconds,
        predictions_per_s=len(acknowledged) / seconds,
        writes_per_commit=writes_per_commit,
        pair_p50_ms=quantiles[49],
        pair_p95_ms=quantiles[94],
        feedback_p50_ms=feedback_quantiles[49],
        feedback_p95_ms=feedback_quantiles[94],
        rows_predictions=rows_predictions,
        rows_feedback=rows_feedback,
        lost=lost,
        duplicated=len(acknowledged) - len(set(acknowledged)) + max(0, rows_predictions - len(acknowledged)),
        with_images=with_images,
    )


@dataclass(frozen=True)
class RoundTrip:
    feedbacks: int
    p50_ms: float
    p95_ms: float


async def feedback_round_trip(data_dir: Path, database: Database, *, feedbacks: int = 300) -> RoundTrip:
    """One person alone: the await of each ✅ tap (a durable feedback row), on an idle store."""
    store = await Store.open(database, data_dir / "images")
    try:
        photo = await store.add_photo(fake_image(random.Random(1), 2_000), format="jpeg")
        user_id = 900_000
        times_ms = []
        for message_id in range(feedbacks):
            prediction_id = await store.record_prediction(
                user_id=user_id,
                chat_id=user_id,
                message_id=message_id,
                photo_sha256=photo.sha256,
                model="digits",
                version=1,
                label="7",
                confidence=0.9,
                probabilities=[("7", 0.9)],
                status="ok",
            )
            started = time.perf_counter()
            await store.record_feedback(prediction_id, user_id=user_id, verdict="correct")
            times_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await store.close()
    quantiles = statistics.quantiles(times_ms, n=100)
    return RoundTrip(feedbacks, quantiles[49], quantiles[94])


def connect(database: Database) -> Connection:
    """A plain connection from outside the store (sqlite3's own, or psycopg's through the adapter)."""
    if is_postgres_url(database):
        from storage.postgres import connect as connect_postgres

        return connect_postgres(str(database))
    return sqlite3.connect(database)


def integrity(database: Database) -> tuple[str, int]:
    """The engine's own integrity check ("ok", or its first complaint) and the rows that break a foreign key.

    SQLite: `PRAGMA integrity_check` and `PRAGMA foreign_key_check`. PostgreSQL: amcheck's
    `bt_index_check(heapallindexed)` on every index of ours (each index agrees with itself and with its
    table's rows), and a count of rows whose foreign key names no row.
    """
    db = connect(database)
    try:
        if is_sqlite(db):
            return (
                str(db.execute("PRAGMA integrity_check").fetchone()[0]),
                len(db.execute("PRAGMA foreign_key_check").fetchall()),
            )
        return _postgres_index_check(db), _postgres_orphans(db)
    finally:
        db.close()


def _postgres_index_check(db: Connection) -> str:
    db.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    indexes = db.execute(
        """SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam
           WHERE n.nspname = 'public' AND a.amname = 'btree' ORDER BY c.relname"""
    ).fetchall()
    for oid, name in indexes:
        try:
            db.execute("SELECT bt_index_check(?, true)", (oid,))
        except Exception as error:
            return f"index {name}: {error}"
    return "ok"


def _postgres_orphans(db: Connection) -> int:
    keys = db.execute(
        """SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, r.attname
           FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
           JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
           WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"""
    ).fetchall()
    orphans = 0
    for table, column, parent, key in keys:
        orphans += db.execute(
            f"""SELECT count(*) FROM {table} t WHERE t.{column} IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{key} = t.{column})"""
        ).fetchone()[0]
    return int(orphans)


def _count_rows(database: Database, acknowledged: list[int]) -> tuple[int, int, int]:
    """Count from a fresh connection what is really on disk, and which acknowledged ids are missing."""
    db = connect(database)
    try:
        predictions = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
        feedback = db.execute("SELECT count(*) FROM feedback").fetchone()[0]
        stored = {row[0] for row in db.execute("SELECT prediction_id FROM feedback")}
    finally:
        db.close()
    return predictions, feedback, len(set(acknowledged) - stored)


# ------------------------------------------------------------------ crash safety


async def crash_writer(data_dir: Path, seed: int, tasks: int = 8, database: Database | None = None) -> None:
    """Write photos, predictions, feedback, captions and /forgets until killed; log each durable write.

    Each line on stdout is written after the `await` that made the write durable:
    `P <prediction id> <sha256> <user>`, `F <prediction id> <user>`, `C <contribution id> <user>`,
    and `x <user>` / `X <user>` before and after a /forget.
    """
    store = await Store.open(database or data_dir / "photobot.sqlite3", data_dir / "images")
    out = sys.stdout
    out.write("ready\n")
    out.flush()

    async def user(task: int) -> None:
        rng = random.Random(seed * 100 + task)
        message_id = 0
        while True:
            user_id = 1 + task + 100 * rng.randrange(3)  # forgettable users are >= 100
            message_id += 1
            data = fake_image(rng, rng.choice([500, 5_000, 60_000]))
            photo = await store.add_photo(data, format="jpeg")
            probabilities = _probabilities(rng)
            prediction_id = await store.record_prediction(
                user_id=user_id,
                chat_id=user_id,
                message_id=seed * 1_000_000 + task * 10_000 + message_id,
                photo_sha256=photo.sha256,
                model="digits",
                version=1,
                label=probabilities[0][0],
                confidence=probabilities[0][1],
                probabilities=probabilities,
                status="ok",
            )
            out.write(f"P {prediction_id} {photo.sha256} {user_id}\n")
            await store.record_feedback(prediction_id, user_id=user_id, verdict="wrong", true_label="3")
            out.write(f"F {prediction_id} {user_id}\n")
            if rng.random() < 0.2:
                contribution = await store.record_contribution(
                    user_id=user_id,
                    chat_id=user_id,
                    message_id=seed * 1_000_000 + task * 10_000 + message_id,
                    photo_sha256=photo.sha256,
                    model="digits",
                    label="3",
                )
                out.write(f"C {contribution} {user_id}\n")
            if user_id >= 100 and rng.random() < 0.02:
                out.write(f"x {user_id}\n")  # from here on, this user's rows may be gone on purpose
                out.flush()
                await store.forget(user_id)
                out.write(f"X {user_id}\n")
            out.flush()

    await asyncio.gather(*(user(t) for t in range(tasks)))


@dataclass(frozen=True)
class CrashCheck:
    integrity: str
    foreign_key_errors: int
    rows_without_image: int
    corrupt_images: int
    lost_acknowledged: int
    temp_files_after_restart: int
    pending_deletions_after_restart: int

    @property
    def ok(self) -> bool:
        return (
            self.integrity == "ok"
            and not self.foreign_key_errors
            and not self.rows_without_image
            and not self.corrupt_images
            and not self.lost_acknowledged
            and not self.temp_files_after_restart
            and not self.pending_deletions_after_restart
        )


@dataclass(frozen=True)
class CrashRunResult:
    kills: int
    acknowledged_writes: int
    checks: list[CrashCheck]
    temp_files_seen_before_restart: int

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def run_crash_child(
    data_dir: Path,
    seed: int,
    kill_after_s: float,
    database: Database | None = None,
    crash_server: Callable[[], object] | None = None,
) -> list[str]:
    """Start a writer, SIGKILL it `kill_after_s` seconds after it is ready, return what it acknowledged.

    `crash_server`, when given, runs just before the kill: the database server dies too (PostgreSQL
    stopped in `immediate` mode, which is a crash: no checkpoint, recovery from the WAL at the next start).
    """
    extra = [str(database)] if database is not None else []
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.storage", "crash-writer", str(data_dir), str(seed), *extra],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    if ready.strip() != "ready":
        child.kill()
        raise RuntimeError(f"crash writer did not start (said {ready!r}, exit {child.wait()})")
    time.sleep(kill_after_s)
    if crash_server is not None:
        crash_server()
    child.send_signal(signal.SIGKILL)
    lines = child.stdout.read().splitlines()
    child.wait()
    return lines


def check_after_crash(
    data_dir: Path, acknowledged: list[str], database: Database | None = None
) -> tuple[CrashCheck, int]:
    """Verify the database and images a killed writer left; then restart the store and look again."""
    database, images = database or data_dir / "photobot.sqlite3", data_dir / "images"
    checked, foreign_key_errors = integrity(database)
    db = connect(database)
    try:
        photos = db.execute(
            "SELECT p.sha256, p.path, b.data FROM photos p LEFT JOIN photo_bytes b ON b.sha256 = p.sha256"
        ).fetchall()
        predictions = {row[0] for row in db.execute("SELECT id FROM predictions")}
        feedback = {row[0] for row in db.execute("SELECT prediction_id FROM feedback")}
        contributions = {row[0] for row in db.execute("SELECT id FROM contributions")}
    finally:
        db.close()
    rows_without_image = corrupt = 0
    for sha256, relative, data in photos:  # the bytes are in the database; the files are a cache
        if data is None:
            rows_without_image += 1
        elif hashlib.sha256(bytes(data)).hexdigest() != sha256:
            corrupt += 1
        path = images / relative
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            corrupt += 1
    lost = _lost(acknowledged, predictions, feedback, contributions)
    temp_before = len(list((images / TMP_DIR).glob(f"*{TMP_SUFFIX}")))
    pending = asyncio.run(_restart(data_dir, database))
    temp_after = len(ImageStore(images).leftover_temp_files())
    check = CrashCheck(checked, foreign_key_errors, rows_without_image, corrupt, lost, temp_after, pending)
    return check, temp_before


def _lost(acknowledged: list[str], predictions: set[int], feedback: set[int], contributions: set[int]) -> int:
    forgotten = {int(line.split()[1]) for line in acknowledged if line[:2] in ("x ", "X ")}
    lost = 0
    for line in acknowledged:
        kind, *fields = line.split()
        if kind in ("x", "X") or int(fields[-1]) in forgotten:
            continue  # deleted on purpose
        table = {"P": predictions, "F": feedback, "C": contributions}[kind]
        lost += int(fields[0]) not in table
    return lost


async def _restart(data_dir: Path, database: Database) -> int:
    store = await Store.open(database, data_dir / "images")
    try:
        return len(await store._read(lambda db: db.execute("SELECT * FROM image_deletions").fetchall()))
    finally:
        await store.close()


class CrashableServer(Protocol):
    """What `crash_run` needs of a database server it may crash (benchmarks.postgres_server's)."""

    def crash(self) -> None: ...

    def restart(self) -> None: ...


def crash_run(
    data_dir: Path,
    *,
    kills: int = 20,
    seed: int = 0,
    max_delay_s: float = 1.0,
    database: Database | None = None,
    server: CrashableServer | None = None,
    server_crash_every: int = 4,
) -> CrashRunResult:
    """`kills` writers killed at random moments; with a `server`, every `server_crash_every`-th kill
    crashes the database server with it (then restarts it)."""
    rng = random.Random(seed)
    checks, acknowledged_total, temp_seen = [], 0, 0
    for kill in range(kills):
        crash = server is not None and kill % server_crash_every == server_crash_every - 1
        acknowledged = run_crash_child(
            data_dir,
            seed * 1000 + kill,
            rng.uniform(0.05, max_delay_s),
            database,
            server.crash if crash and server is not None else None,
        )
        if crash and server is not None:
            server.restart()
        acknowledged_total += len(acknowledged)
        check, temp_before = check_after_crash(data_dir, acknowledged, database)
        temp_seen += temp_before
        checks.append(check)
    return CrashRunResult(kills, acknowledged_total, checks, temp_seen)


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "crash-writer":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        asyncio.run(crash_writer(Path(argv[1]), int(argv[2]), database=argv[3] if len(argv) == 4 else None))
        return 0
    print("usage: python -m benchmarks.storage crash-writer DATA_DIR SEED [DATABASE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
