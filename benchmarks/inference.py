"""Measuring the engine: closed-loop load at fixed concurrency, per-request baselines, hot swap under load.

Used by `photobot bench inference`, which supplies the photos (MNIST digits rendered as phone photos by
`training.synth_photos`, flower photos from the data set) and prints the figures.

- `run_load`: `concurrency` callers each send a photo, wait for the answer, send the next, for
  `seconds` (after a warm-up); throughput is answers per second, latency percentiles are per photo.
- `PerRequest`: the two baselines, with the same decoding, preprocessing and answer rules as the engine
  and the same number of threads (one per core), but one model call per photo: `model.predict` (what a
  bot written from the Keras tutorials does) or a direct `model(x)` call.
- `hot_swap_under_load`: the load runs while the active version is switched every few seconds;
  reports failures and the latency bump around the swaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import statistics
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.classifier import Classifier, adapter_for
from inference.decode import decode_image
from inference.model_store import ModelStore, ModelVersion
from inference.prediction import Mode, Prediction

log = logging.getLogger(__name__)

Call = Callable[[bytes], Awaitable[Any]]


@dataclass(frozen=True)
class LoadResult:
    model: str
    method: str  # "engine", "predict" or "call"
    concurrency: int
    answered: int
    failed: int
    seconds: float
    throughput: float  # photos per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s: float = float("nan")  # CPU seconds this process used in the window (all threads)
    photos_per_cpu_s: float = float("nan")  # throughput per CPU second: robust to others' load
    mean_batch: float | None = None  # rows per model call (engine only)

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


async def run_load(
    call: Call, photos: Sequence[bytes], *, concurrency: int, seconds: float, warmup_s: float | None = None
) -> tuple[list[tuple[float, float]], int, float, float]:
    """Closed loop: ([(finished_at, latency_ms)] inside the window, failures, window length, CPU seconds).

    Every failure counts, warm-up included; throughput counts the answers completed in the window.
    """
    order = itertools.cycle(range(len(photos)))
    warmup_s = warmup_s if warmup_s is not None else max(1.0, 0.15 * seconds)  # let the queues fill first
    begin = time.monotonic()
    start, stop = begin + warmup_s, begin + warmup_s + seconds
    done: list[tuple[float, float]] = []
    failures = 0

    async def caller() -> None:
        nonlocal failures
        while time.monotonic() < stop:
            sent = time.monotonic()
            try:
                await call(photos[next(order)])
            except Exception as error:
                failures += 1
                log.warning("failed: %s: %s", type(error).__name__, error)
                continue
            finished = time.monotonic()
            if start <= finished <= stop:  # answers completed inside the window count
                done.append((finished, (finished - sent) * 1000.0))

    loop = asyncio.get_running_loop()
    cpu: list[float] = []
    loop.call_at(loop.time() + (start - time.monotonic()), lambda: cpu.append(cpu_seconds()))
    loop.call_at(loop.time() + (stop - time.monotonic()), lambda: cpu.append(cpu_seconds()))
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done, failures, seconds, (cpu[1] - cpu[0]) if len(cpu) == 2 else float("nan")


def cpu_seconds() -> float:
    """CPU time this process and its pool processes have used: on a shared machine, what the work cost."""
    tree = process_tree_cpu_seconds(os.getpid())
    if tree is not None:
        return tree
    times = os.times()  # no /proc: this process's threads only
    return times.user + times.system


def process_tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of a process and its live children (the engine's process pool), from /proc: each one's
    utime + stime, plus cutime + cstime, the children it has already waited for (a pool worker replaced,
    a conversion process done), so the total never drops when one of them exits."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, found = 0.0, False
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1] is the parent's pid
            total += sum(int(field) for field in fields[11:15]) / ticks
            found = True
    return total if found else None


def summarise(
    model: str,
    method: str,
    concurrency: int,
    done: list[tuple[float, float]],
    failed: int,
    seconds: float,
    cpu_s: float,
) -> LoadResult:
    latencies = [ms for _, ms in done]
    return LoadResult(
        model=model,
        method=method,
        concurrency=concurrency,
        answered=len(done),
        failed=failed,
        seconds=seconds,
        throughput=len(done) / seconds,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        cpu_s=cpu_s,
        photos_per_cpu_s=len(done) / cpu_s if cpu_s > 0 else float("nan"),
    )


async def measure_engine(
    classifier: Classifier, name: str, mode: Mode, photos: Sequence[bytes], concurrency: int, seconds: float
) -> LoadResult:
    before = classifier.models()[name].batches

    async def call(data: bytes) -> Prediction:
        return await classifier.classify(data, mode)

    done, failed, window, cpu_s = await run_load(call, photos, concurrency=concurrency, seconds=seconds)
    after = classifier.models()[name].batches
    calls = after["batches"] - before["batches"]
    result = summarise(name, "engine", concurrency, done, failed, window, cpu_s)
    mean_batch = (after["rows"] - before["rows"]) / calls if calls else None
    return LoadResult(**{**asdict(result), "mean_batch": mean_batch})


class PerRequest:
    """The baselines: the engine's own pipeline, but one model call per photo, in a pool of threads."""

    def __init__(self, version: ModelVersion, model: Any, *, threads: int, limits: dict[str, int]) -> None:
        self.version = version
        self.model = model
        self.adapter = adapter_for(version)
        self.limits = limits
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=f"baseline-{version.name}")
        self.grayscale = version.name == "digits"
        # Keras' JAX `predict` takes the weights out of the model's variables for the call and puts
        # them back at its end (a memory saving meant for one caller): two threads inside it at once
        # leave the model without weights ("'NoneType' object is not callable"). There it runs one
        # call at a time; decoding and preprocessing around it still run in every thread.
        self.predict_lock = threading.Lock() if _backend() == "jax" else contextlib.nullcontext()
        # Calling a model whose input is named with a bare array makes Keras warn on every call.
        warnings.filterwarnings(
            "ignore", message="The structure of `inputs` doesn't match", category=UserWarning
        )

    def answer(self, data: bytes, method: str) -> Prediction:
        image = decode_image(
            data, target_size=self.adapter.decode_size, grayscale=self.grayscale, **self.limits
        )
        inputs, reason = self.adapter.prepare(image)
        if inputs is None:
            return self.adapter.nothing(self.version, reason)
        inputs = inputs.astype(np.float32).reshape(len(inputs), *self.model.inputs[0].shape[1:])
        if method == "predict":
            with self.predict_lock:
                outputs = self.model.predict(inputs, verbose=0)
        else:
            outputs = _numpy(self.model(inputs, training=False))
        return self.adapter.answer(outputs, self.version)

    async def measure(
        self, method: str, photos: Sequence[bytes], concurrency: int, seconds: float
    ) -> LoadResult:
        loop = asyncio.get_running_loop()
        for data in photos[:3]:
            await loop.run_in_executor(self.pool, self.answer, data, method)  # warm up

        async def call(data: bytes) -> Prediction:
            return await loop.run_in_executor(self.pool, self.answer, data, method)

        done, failed, window, cpu_s = await run_load(call, photos, concurrency=concurrency, seconds=seconds)
        return summarise(self.version.name, method, concurrency, done, failed, window, cpu_s)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _backend() -> str:
    import keras  # already loaded: the baseline's model is a Keras model

    return keras.backend.backend()


def _numpy(outputs: Any) -> Any:
    if isinstance(outputs, dict):
        return {k: _numpy(v) for k, v in outputs.items()}
    if isinstance(outputs, list | tuple):
        return [_numpy(v) for v in outputs]
    return np.asarray(outputs)


@dataclass
class SwapResult:
    model: str
    concurrency: int
    seconds: float
    swaps: int
    answered: int
    failed: int
    versions_seen: list[int]
    steady_p50_ms: float
    steady_p95_ms: float
    steady_p99_ms: float
    swap_p50_ms: float  # answers that finished while a swap loaded or within `window_s` after it
    swap_p95_ms: float
    swap_p99_ms: float
    swap_max_ms: float
    reload_ms: list[float] = field(default_factory=list)  # load + warm-up + switch, per swap

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in data.items()}


async def hot_swap_under_load(
    classifier: Classifier,
    store: ModelStore,
    name: str,
    mode: Mode,
    photos: Sequence[bytes],
    versions: tuple[int, int],
    *,
    concurrency: int = 32,
    seconds: float = 30.0,
    every_s: float = 5.0,
    window_s: float = 1.0,
) -> SwapResult:
    """Serve at `concurrency` for `seconds` while switching between two versions every `every_s`."""
    seen: set[int] = set()

    async def call(data: bytes) -> Prediction:
        prediction = await classifier.classify(data, mode)
        if prediction.version is not None:
            seen.add(prediction.version)
        return prediction

    swaps_done: list[tuple[float, float]] = []  # (began, switched) per swap
    ticks = time.monotonic() + 1.0  # run_load's warm-up ends here

    async def swapper() -> None:
        targets = itertools.cycle((versions[1], versions[0]))
        n = 0
        while (n := n + 1) * every_s < seconds:  # every swap falls inside the measured window
            await asyncio.sleep(max(0.0, ticks + n * every_s - time.monotonic()))
            began = time.monotonic()
            store.promote(name, next(targets))
            await classifier.reload(name)
            swaps_done.append((began, time.monotonic()))

    load = asyncio.create_task(run_load(call, photos, concurrency=concurrency, seconds=seconds, warmup_s=1.0))
    swaps = asyncio.create_task(swapper())
    done, failed, window, _ = await load
    swaps.cancel()
    await asyncio.gather(swaps, return_exceptions=True)

    def near_swap(finished: float) -> bool:
        """Answered while a swap was loading, or within `window_s` after it switched."""
        return any(began <= finished <= switched + window_s for began, switched in swaps_done)

    bumped = [ms for at, ms in done if near_swap(at)]
    steady = [ms for at, ms in done if not near_swap(at)]
    return SwapResult(
        model=name,
        concurrency=concurrency,
        seconds=window,
        swaps=len(swaps_done),
        answered=len(done),
        failed=failed,
        versions_seen=sorted(seen),
        steady_p50_ms=percentile(steady, 50),
        steady_p95_ms=percentile(steady, 95),
        steady_p99_ms=percentile(steady, 99),
        swap_p50_ms=percentile(bumped, 50),
        swap_p95_ms=percentile(bumped, 95),
        swap_p99_ms=percentile(bumped, 99),
        swap_max_ms=max(bumped, default=float("nan")),
        reload_ms=[round((switched - began) * 1000.0, 1) for began, switched in swaps_done],
    )


@dataclass(frozen=True)
class ArithmeticPeak:
    """What this CPU can do in float32: nominal (from its flags and clock) and measured (a big matmul)."""

    cores: int
    ghz: float | None
    flops_per_cycle: int  # per core: FMA units × SIMD lanes × 2
    nominal_gflops: float | None
    measured_gflops: float  # numpy float32 matmul, all cores, right now (others' work included)


def arithmetic_peak(seconds: float = 2.0) -> ArithmeticPeak:
    """The machine's float32 limit, to put photos/s × FLOPs per photo against."""
    cores = os.cpu_count() or 1
    flags, ghz = _cpu_flags_and_clock()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4
    units = 2 if "fma" in flags else 1  # Xeon cores with AVX-512 issue two FMAs per cycle; an assumption
    per_cycle = units * lanes * 2
    size = 1024
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    a @ b
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    elapsed = time.perf_counter() - started
    return ArithmeticPeak(
        cores=cores,
        ghz=ghz,
        flops_per_cycle=per_cycle,
        nominal_gflops=cores * ghz * per_cycle if ghz else None,
        measured_gflops=runs * 2 * size**3 / elapsed / 1e9,
    )


def _cpu_flags_and_clock() -> tuple[set[str], float | None]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set(), None
    found = re.search(r"^flags\s*:\s*(.*)$", text, re.M)  # x86's cpuinfo; an ARM one says "Features"
    flags = set(found.group(1).split()) if found else set()
    clocks = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    return flags, (statistics.median(clocks) / 1000.0 if clocks else None)
