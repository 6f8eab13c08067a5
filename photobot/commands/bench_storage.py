"""`photobot bench storage`: durable prediction + feedback writes/s, and the SIGKILL crash run.

Runs in a fresh temporary folder (never the bot's DATA_DIR) unless `--dir` is given.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from photobot.settings import Settings


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


def main(args: argparse.Namespace, settings: Settings) -> int:
    with tempfile.TemporaryDirectory(prefix="photobot-bench-") as temp:
        folder = args.dir or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        return _crash(folder, args.crash) if args.crash else _throughput(folder, args)


def _throughput(folder: Path, args: argparse.Namespace) -> int:
    import asyncio

    from benchmarks.storage import throughput

    result = asyncio.run(
        throughput(
            folder,
            tasks=args.tasks,
            predictions=args.predictions,
            with_images=args.images,
            max_batch=args.max_batch,
        )
    )
    what = "prediction (+ new image) + feedback" if args.images else "prediction + feedback"
    print(f"{what}, each committed durably, {result.tasks} concurrent tasks:")
    print(f"  {result.predictions} predictions in {result.seconds:.2f} s = {result.predictions_per_s:,.0f}/s")
    print(
        f"  latency of one prediction + feedback: p50 {result.pair_p50_ms:.1f} ms, "
        f"p95 {result.pair_p95_ms:.1f} ms"
    )
    print(f"  writes per group commit: {result.writes_per_commit:.1f}")
    print(
        f"  rows on disk: {result.rows_predictions} predictions, {result.rows_feedback} feedback; "
        f"lost {result.lost}, duplicated {result.duplicated}"
    )
    ok = result.lost == 0 and result.duplicated == 0 and result.rows_predictions == result.predictions
    return 0 if ok else 1


def _crash(folder: Path, kills: int) -> int:
    from benchmarks.storage import crash_run

    result = crash_run(folder, kills=kills)
    failed = [(n, check) for n, check in enumerate(result.checks, start=1) if not check.ok]
    print(
        f"SIGKILL at random moments, {result.kills} times; "
        f"{result.acknowledged_writes} durable writes acknowledged"
    )
    print(f"  temporary files found right after the kills: {result.temp_files_seen_before_restart}")
    print(
        "  after each kill: integrity_check ok, foreign keys ok, every photo row's file present and intact, "
        "no acknowledged write lost, no temporary file after restart: "
        + ("all yes" if not failed else f"NO in {len(failed)} runs")
    )
    for n, check in failed:
        print(f"  run {n}: {check}")
    return 0 if not failed else 1
