"""How long a promotion takes to reach every serving process, and what a cold cache costs, on PostgreSQL.

`photobot bench promote` runs it (photobot/commands/bench_promote.py). The run publishes two versions of
a model into the database (the shipped default, and the same model saved again: another file, as a
retrain would give), starts N serving processes — `python -m benchmarks.promote serve MODEL CACHE
POLL_S PHOTO RATE`, each the bot's own classifier (`photobot.serving.build_classifier`) with DATABASE_URL
and a cache folder of its own, as on N machines, answering RATE photos a second — then runs the real
`photobot models promote MODEL V` R times, alternating the two versions. For each it measures the
command's own time (start-up, loading and running the version as a check, writing the pointer) and,
from the moment it says the pointer is written, when each process reports the new version serving: at
most one poll interval to see the row, plus fetching the version into its cache the first time and
loading and warming it.
Every answer and every failed request of the serving processes is counted.

The cold-cache figure: `ModelStore.get` of the model's version into an empty cache folder (the files
fetched from the database, each checked against its SHA-256, fsynced, renamed into place), and the
fetch alone, repeated.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 600.0  # a serving process loads TensorFlow and the model (seconds; more on a busy box)
SWITCH_TIMEOUT_S = 300.0


@dataclass
class Switch:
    version: int
    command_s: float  # `photobot models promote` from its start to the pointer written (its own check)
    lags_s: list[float]  # from the pointer written to each process serving the version


@dataclass
class PromoteResult:
    model: str
    processes: int
    poll_s: float
    rate: float  # photos a second each process answers throughout
    switches: list[Switch]
    answers: int
    failed: int
    errors: list[str] = field(default_factory=list)
    during_switches: tuple[int, int] = (0, 0)  # (answered, failed) of photos asked while one was switching

    @property
    def lags(self) -> list[float]:
        return [lag for switch in self.switches for lag in switch.lags_s]

    @property
    def slowest(self) -> list[float]:
        """Per promotion: until the last process served it (what "every process" waits for)."""
        return [max(switch.lags_s) for switch in self.switches]


@dataclass
class FetchResult:
    model: str
    megabytes: float
    get_s: list[float]  # ModelStore.get into an empty cache: fetch + SHA-256 + fsync + rename
    fetch_s: list[float]  # the registry's fetch alone (the bytes from the server into files)

    @property
    def get_median_s(self) -> float:
        return statistics.median(self.get_s)

    @property
    def fetch_median_s(self) -> float:
        return statistics.median(self.fetch_s)


def publish_two_versions(url: str, work: Path, model: str) -> tuple[int, int]:
    """Seed the shipped default as v1 (serving), and the same model saved again as v2 (not serving)."""
    import keras

    from inference.model_store import MODEL_FILE
    from photobot.serving import seed_models
    from photobot.settings import Settings

    store = seed_models(Settings(data_dir=work / "publisher", database_url=url), names=(model,))
    try:
        first = store.active(model)
        if first is None or store.registry is None:
            raise RuntimeError(f"no shipped {model} model to seed")
        others = [path for path in store.registry.files(model, first.version) if path != MODEL_FILE]
        with store.new_version(model, _meta_of(first.meta)) as staged:
            keras.saving.load_model(first.model_file, safe_mode=True).save(staged.path / MODEL_FILE)
            for path in others:
                (staged.path / path).write_bytes((first.path / path).read_bytes())
        return first.version, staged.published
    finally:
        store.close()


def _meta_of(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in ("name", "version", "sha256", "created")}


def a_photo(folder: Path) -> Path:
    """A 640×480 JPEG of noise: every model looks at it (a flower model answers, a digit reader refuses)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    path = folder / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return path


class Servers:
    """The serving processes and what they report (one JSON object per line on stdout)."""

    def __init__(self, url: str, work: Path, model: str, processes: int, poll_s: float, rate: float) -> None:
        photo = a_photo(work)
        env = {**os.environ, "DATABASE_URL": url, "TELEGRAM_BOT_TOKEN": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        with open(work / "servers.log", "a") as log:  # their logs, kept with --dir
            self.processes = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.promote",
                        "serve",
                        model,
                        str(work / f"machine{i}"),
                        str(poll_s),
                        str(photo),
                        str(rate),
                    ],
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
                for i in range(processes)
            ]
        for index, process in enumerate(self.processes):
            threading.Thread(target=self._read, args=(index, process), daemon=True).start()

    def _read(self, index: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                self.events.put((index, json.loads(line)))
        self.events.put((index, {"event": "exited", "code": process.wait()}))

    def wait_for(self, event: str, timeout_s: float, **match: Any) -> dict[int, dict[str, Any]]:
        """The first `event` (with these fields) from every process."""
        seen: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(seen) < len(self.processes):
            try:
                index, found = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"{len(seen)} of {len(self.processes)} processes reported {event}"
                ) from None
            if found["event"] == "exited" and event != "exited":
                raise RuntimeError(f"serving process {index} exited with {found['code']}")
            if found["event"] == event and all(found.get(k) == v for k, v in match.items()):
                seen.setdefault(index, found)
        return seen

    def stop(self) -> dict[int, dict[str, Any]]:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()  # the process stops at the end of its input
        try:
            return self.wait_for("done", 120.0)
        finally:
            for process in self.processes:
                if process.poll() is None:
                    process.kill()
                process.wait()


def promote(
    url: str, work: Path, model: str, *, processes: int, rounds: int, poll_s: float, rate: float
) -> PromoteResult:
    first, second = publish_two_versions(url, work, model)
    servers = Servers(url, work, model, processes, poll_s, rate)
    switches = []
    windows: list[tuple[float, float]] = []
    try:
        servers.wait_for("ready", READY_TIMEOUT_S)
        env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(work / "cli"), "TELEGRAM_BOT_TOKEN": ""}
        for index in range(rounds):
            target = second if index % 2 == 0 else first
            started = time.time()
            written = _promote_command(model, target, env, work / "cli.log")
            served = servers.wait_for("serving", SWITCH_TIMEOUT_S, version=target)
            windows.append((written, max(event["at"] for event in served.values())))
            switches.append(
                Switch(target, written - started, [served[i]["at"] - written for i in sorted(served)])
            )
    finally:
        done_events = servers.stop()
    return PromoteResult(
        model=model,
        processes=processes,
        poll_s=poll_s,
        rate=rate,
        switches=switches,
        answers=sum(e["answers"] for e in done_events.values()),
        failed=sum(e["failed"] for e in done_events.values()),
        errors=[error for e in done_events.values() for error in e["errors"]],
        during_switches=(
            _within(windows, [t for e in done_events.values() for t in e["answered_at"]]),
            _within(windows, [t for e in done_events.values() for t in e["failed_at"]]),
        ),
    )


def _within(windows: list[tuple[float, float]], times: list[float]) -> int:
    return sum(any(start <= t <= end for start, end in windows) for t in times)


def _promote_command(model: str, version: int, env: dict[str, str], log: Path) -> float:
    """Run `photobot models promote MODEL VERSION`; return when it said the pointer was written (its
    process then takes seconds more to exit: TensorFlow's teardown)."""
    with open(log, "a") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "photobot", "models", "promote", model, str(version)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert process.stdout is not None
        written = None
        for line in process.stdout:
            if written is None and "is now serving" in line:
                written = time.time()
        if process.wait() != 0 or written is None:
            raise RuntimeError(f"photobot models promote {model} {version} failed: see {log}")
    return written


def cold_fetch(url: str, work: Path, model: str, repeats: int = 5) -> FetchResult:
    """The serving version of `model` fetched into an empty cache folder, `repeats` times each way."""
    from inference.model_store import ModelStore
    from storage.model_registry import PostgresRegistry

    work.mkdir(parents=True, exist_ok=True)
    registry = PostgresRegistry(url)
    try:
        version = registry.active(model)
        if version is None:
            raise RuntimeError(f"no {model} version serves in the database")
        files = registry.files(model, version)
        registry.fetch(model, version, Path(tempfile.mkdtemp(dir=work)))  # a first connection and warm-up
        get_s, fetch_s = [], []
        for index in range(repeats):
            store = ModelStore(work / f"cold{index}", registry=registry)
            started = time.perf_counter()
            store.get(model, version)
            get_s.append(time.perf_counter() - started)
            folder = Path(tempfile.mkdtemp(dir=work))
            started = time.perf_counter()
            registry.fetch(model, version, folder)
            fetch_s.append(time.perf_counter() - started)
        size = sum((folder / path).stat().st_size for path in files)
    finally:
        registry.close()
    return FetchResult(model=model, megabytes=size / 1e6, get_s=get_s, fetch_s=fetch_s)


# ------------------------------------------------------------------------------ a serving process


def serve(model: str, data_dir: Path, poll_s: float, photo: Path, rate: float) -> None:
    """One machine's bot classifier: report when it serves another version, answer `rate` photos a
    second until stdin closes, then report the answers and failures (one JSON object per line)."""
    asyncio.run(_serve(model, data_dir, poll_s, photo.read_bytes(), rate))


def _emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def _serve(model: str, data_dir: Path, poll_s: float, photo: bytes, rate: float) -> None:
    from inference.catalogue import DEFAULT_CATALOGUE
    from photobot.serving import build_classifier
    from photobot.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=os.environ["DATABASE_URL"])
    classifier = build_classifier(settings, names=(model,), reload_poll_s=poll_s)
    await classifier.start()
    mode = DEFAULT_CATALOGUE[model].mode
    stop = asyncio.Event()
    asked: dict[str, list[float]] = {"answered_at": [], "failed_at": []}  # when each photo was asked
    errors: list[str] = []

    async def watch() -> None:
        seen = classifier.models()[model].version
        _emit(event="ready", version=seen)
        while not stop.is_set():
            now = classifier.models()[model].version
            if now != seen:
                _emit(event="serving", version=now, at=time.time())
                seen = now
            await asyncio.sleep(0.005)

    async def ask() -> None:
        """One photo every 1/rate s (a bot's steady traffic), each awaited by a task of its own."""
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*pending)

    async def one() -> None:
        at = time.time()
        try:
            await classifier.classify(photo, mode)
            asked["answered_at"].append(at)
        except Exception as error:  # every failure is what this benchmark counts
            asked["failed_at"].append(at)
            errors.append(f"{type(error).__name__}: {error}"[:200])

    async def until_stdin_closes() -> None:
        await asyncio.to_thread(sys.stdin.read)
        stop.set()

    try:
        await asyncio.gather(watch(), ask(), until_stdin_closes())
    finally:
        await classifier.close()
        classifier.store.close()
    _emit(
        event="done",
        answers=len(asked["answered_at"]),
        failed=len(asked["failed_at"]),
        errors=sorted(set(errors))[:5],
        **asked,
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 7:
        raise SystemExit("usage: python -m benchmarks.promote serve MODEL DATA_DIR POLL_S PHOTO RATE")
    serve(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]), float(sys.argv[6]))
