"""`photobot bench promote`: from `photobot models promote` to every serving process serving the new
version, with models shared through PostgreSQL, and the cost of fetching a model into a cold cache.

PostgreSQL is a throwaway server started for the run (`benchmarks.postgres_server`) unless `--database
URL` names one, whose database must hold no model versions yet: the run publishes two. Everything else
happens in a temporary folder (`--dir` to keep it). See benchmarks/promote.py for what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path

from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="flowers", help="the model to promote (default flowers)")
    parser.add_argument("--processes", type=int, default=2, help="serving processes (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="promotions, alternating v2 and v1 (default 4)")
    parser.add_argument(
        "--poll-s", type=float, help="how often each process reads the pointer (default ENGINE_RELOAD_POLL_S)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2.0,
        help="photos a second each process answers throughout (default 2)",
    )
    parser.add_argument("--fetches", type=int, default=5, help="cold-cache fetches measured (default 5)")
    parser.add_argument("--database", metavar="URL", help="a PostgreSQL database with no model versions")
    parser.add_argument("--dir", type=Path, help="work here instead of a temporary folder")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks.promote import cold_fetch, promote

    poll_s = args.poll_s if args.poll_s is not None else settings.engine.reload_poll_s
    with tempfile.TemporaryDirectory(prefix="photobot-bench-") as temp, contextlib.ExitStack() as stack:
        work = args.dir or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        url = args.database or _throwaway(stack)
        print(
            f"== {args.processes} serving processes, {args.model}, {args.rate:g} photos/s each, "
            f"poll every {poll_s:g} s; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        result = promote(
            url, work, args.model, processes=args.processes, rounds=args.rounds, poll_s=poll_s, rate=args.rate
        )
        for switch in result.switches:
            lags = ", ".join(f"{lag:.2f}" for lag in switch.lags_s)
            print(
                f"  promote v{switch.version}: the pointer written {switch.command_s:.1f} s after the "
                f"command started; every process served it {max(switch.lags_s):.2f} s later (each: {lags} s)"
            )
        slowest = result.slowest
        print(
            f"from the pointer written to every process serving: median {statistics.median(slowest):.2f} s, "
            f"worst {max(slowest):.2f} s (poll interval {poll_s:g} s)"
        )
        answered, failed = result.during_switches
        print(
            f"photos answered meanwhile: {result.answers}, failed: {result.failed}; of those asked while a "
            f"promotion was on its way (pointer written to every process serving): {answered} answered, "
            f"{failed} failed; load average {os.getloadavg()[0]:.1f}"
        )
        for error in result.errors:
            print(f"  failed: {error}")
        fetched = cold_fetch(url, work, args.model, repeats=args.fetches)
        print(
            f"cold cache: {fetched.model} ({fetched.megabytes:.1f} MB) fetched, checked and in place in "
            f"{fetched.get_median_s * 1000:.0f} ms (median of {len(fetched.get_s)}; fetch alone "
            f"{fetched.fetch_median_s * 1000:.0f} ms = {fetched.megabytes / fetched.fetch_median_s:.0f} MB/s)"
        )
        return 0 if result.failed == 0 else 1


def _throwaway(stack: contextlib.ExitStack) -> str:
    from benchmarks.postgres_server import PostgresServer

    server = stack.enter_context(PostgresServer.start())
    return server.create_database()
