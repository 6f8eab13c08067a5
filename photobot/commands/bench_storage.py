"""`photobot bench storage`: durable prediction + feedback writes/s, and the SIGKILL crash run.

Runs in a fresh temporary folder (never the bot's DATA_DIR) unless `--dir` is given, on SQLite (the
default), on PostgreSQL, or on both in one run (`--backend both`). PostgreSQL is a throwaway server
started for the run (`photobot.commands.bench_backends`, as `bench bot` starts it) unless `--database
URL` names one, whose database must be empty: the run writes to it. With a throwaway server the crash
run also crashes the server at every fourth kill.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from photobot.commands.bench_backends import ThrowawayPostgres, add_backend_option, chosen
from photobot.settings import Settings

if TYPE_CHECKING:
    from benchmarks.postgres_server import PostgresServer
    from storage.dialect import Database


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=50, help="concurrent writers (default 50)")
    parser.add_argument("--predictions", type=int, default=20_000, help="predictions in all (default 20000)")
    parser.add_argument(
        "--images", action="store_true", help="also store a new 20 kB image (fsynced) per prediction"
    )
    parser.add_argument(
        "--max-batch", type=int, default=256, help="writes per group commit at most (1 = no group commit)"
    )
    parser.add_argument("--crash", type=int, default=0, metavar="N", help="instead: SIGKILL a writer N times")
    parser.add_argument("--dir", type=Path, help="work here instead of a temporary folder")
    add_backend_option(
        parser,
        default=None,
        help_text="the database: sqlite (default), postgresql (a throwaway server unless --database), both",
    )
    parser.add_argument(
        "--database", metavar="URL", help="an empty PostgreSQL database for the postgresql run (written to)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    backend = args.backend or ("postgresql" if args.database else "sqlite")
    backends = chosen(backend)
    with tempfile.TemporaryDirectory(prefix="photobot-bench-") as temp, ThrowawayPostgres() as postgres:
        folder = args.dir or Path(temp)
        codes = []
        for name in backends:
            work = folder / name if len(backends) > 1 else folder
            work.mkdir(parents=True, exist_ok=True)
            database, server = _database(name, args, work, postgres)
            print(f"== {name}: {_describe(database)}")
            codes.append(
                _crash(work, args.crash, database, server)
                if args.crash
                else _throughput(work, args, database)
            )
        return max(codes)


def _database(
    backend: str, args: argparse.Namespace, work: Path, postgres: ThrowawayPostgres
) -> tuple[Database, PostgresServer | None]:
    if backend == "sqlite":
        return work / "photobot.sqlite3", None
    if args.database:
        return str(args.database), None
    return postgres.database(), postgres.server


def _describe(database: Database) -> str:
    from storage.dialect import describe

    return describe(database)


def _throughput(folder: Path, args: argparse.Namespace, database: Database) -> int:
    import asyncio

    from benchmarks.storage import feedback_round_trip, throughput

    result = asyncio.run(
        throughput(
            folder,
            tasks=args.tasks,
            predictions=args.predictions,
            with_images=args.images,
            max_batch=args.max_batch,
            database=database,
        )
    )
    alone = asyncio.run(feedback_round_trip(folder, database))
    what = "prediction (+ new image) + feedback" if args.images else "prediction + feedback"
    print(f"{what}, each committed durably, {result.tasks} concurrent tasks:")
    print(f"  {result.predictions} predictions in {result.seconds:.2f} s = {result.predictions_per_s:,.0f}/s")
    print(
        f"  latency of one prediction + feedback: p50 {result.pair_p50_ms:.1f} ms, "
        f"p95 {result.pair_p95_ms:.1f} ms; of the feedback alone: p50 {result.feedback_p50_ms:.1f} ms, "
        f"p95 {result.feedback_p95_ms:.1f} ms"
    )
    print(f"  writes per group commit: {result.writes_per_commit:.1f}")
    print(
        f"  rows on disk: {result.rows_predictions} predictions, {result.rows_feedback} feedback; "
        f"lost {result.lost}, duplicated {result.duplicated}"
    )
    print(
        f"feedback round trip, one person on an idle store ({alone.feedbacks} taps): "
        f"p50 {alone.p50_ms:.2f} ms, p95 {alone.p95_ms:.2f} ms"
    )
    ok = result.lost == 0 and result.duplicated == 0 and result.rows_predictions == result.predictions
    return 0 if ok else 1


def _crash(folder: Path, kills: int, database: Database, server: PostgresServer | None) -> int:
    from benchmarks.storage import crash_run

    result = crash_run(folder, kills=kills, database=database, server=server)
    failed = [(n, check) for n, check in enumerate(result.checks, start=1) if not check.ok]
    print(
        f"SIGKILL at random moments, {result.kills} times; "
        f"{result.acknowledged_writes} durable writes acknowledged"
        + (f"; the server crashed too at {kills // 4} of them" if server is not None else "")
    )
    print(f"  temporary files found right after the kills: {result.temp_files_seen_before_restart}")
    check = "amcheck bt_index_check" if isinstance(database, str) else "integrity_check"
    print(
        f"  after each kill: {check} ok, foreign keys ok, every photo row's file present and intact, "
        "no acknowledged write lost, no temporary file after restart: "
        + ("all yes" if not failed else f"NO in {len(failed)} runs")
    )
    for n, failure in failed:
        print(f"  run {n}: {failure}")
    return 0 if not failed else 1
