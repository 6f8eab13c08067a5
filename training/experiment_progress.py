"""The experiment's progress line: runs done, seconds per run, and the time left."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import TextIO


class Progress:
    """A one-line progress bar: runs done, seconds per run, time left (estimated per architecture)."""

    def __init__(self, stream: TextIO = sys.stderr, jobs: int = 1, width: int = 24) -> None:
        self.stream = stream
        self.jobs = jobs
        self.width = width
        self.total = 0
        self.started = time.monotonic()
        self.done_before = 0
        self.pending: list[str] = []
        self.last_done = -1
        self.interactive = stream.isatty()

    def start(self, finished: dict[str, dict], run_ids: Sequence[str]) -> None:
        self.pending = list(run_ids)
        self.total = len(self.pending)
        self.done_before = len(finished)
        self.started = time.monotonic()
        self._show(finished, force=True)

    def update(self, finished: dict[str, dict]) -> None:
        self._show(finished)

    def finish(self, finished: dict[str, dict]) -> None:
        self._show(finished)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, finished: dict[str, dict]) -> str:
        done = min(len(finished), self.total)
        filled = round(self.width * done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        seconds = [r["seconds"] for r in finished.values()]
        per_run = f"{sum(seconds) / len(seconds):.1f} s/run" if seconds else "-- s/run"
        left = self.seconds_left(finished)
        untimed = sorted(set(self.pending_archs(finished)) - {r["arch"] for r in finished.values()})
        if done >= self.total:
            left_text = "done"
        elif left is None:
            left_text = "estimating"
        elif untimed:  # guessed at the mean of the others: a CNN may take far longer than an MLP
            left_text = f"~{_duration(left)} left if {', '.join(untimed)} runs as fast as the others"
        else:
            left_text = f"~{_duration(left)} left"
        return f"[{bar}] {done}/{self.total} runs · {per_run} · {left_text}"

    def seconds_left(self, finished: dict[str, dict]) -> float | None:
        """Remaining runs × the mean time of runs of the same architecture, shared among the jobs."""
        by_arch: dict[str, list[float]] = {}
        for record in finished.values():
            by_arch.setdefault(record["arch"], []).append(record["seconds"])
        if not by_arch:
            return None
        overall = sum(sum(v) for v in by_arch.values()) / sum(len(v) for v in by_arch.values())
        remaining = self.pending_archs(finished)
        total = sum(sum(by_arch[a]) / len(by_arch[a]) if a in by_arch else overall for a in remaining)
        return total / self.jobs

    def pending_archs(self, finished: dict[str, dict]) -> list[str]:
        return [run_id.rsplit("@", 1)[0] for run_id in self.pending if run_id not in finished]

    def _show(self, finished: dict[str, dict], force: bool = False) -> None:
        if len(finished) == self.last_done and not force:
            return
        self.last_done = len(finished)
        text = self.line(finished)
        self.stream.write(("\r" + text) if self.interactive else text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
