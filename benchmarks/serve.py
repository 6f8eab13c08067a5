"""`photobot bench inference --remote`: the same load on inference on Ray Serve, on this machine.

A local Ray cluster (as many CPUs as the machine has) runs the application `photobot serve inference`
deploys, over the benchmark's copy of the model store; callers send the same photos through the bot's
client (`RemoteClassifier`: HTTP to Ray Serve's proxy). CPU is counted over the whole process tree —
Ray's GCS, raylet, proxy, controller and replicas are this process's descendants — so photos per CPU
second compare with the embedded engine's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.inference import LoadResult, run_load, summarise
from inference.catalogue import Catalogue
from inference.classifier import ModelStatus
from inference.remote.client import RemoteClassifier
from inference.remote.config import RemoteConfig

Deploy = Callable[[Catalogue, int], Any]  # (catalogue, port) → deploys the application on Ray Serve


@dataclass
class RayServe:
    """A local Ray cluster with Serve's proxy on a free port, and the application deployed on it."""

    url: str

    @classmethod
    def start(cls, deploy: Deploy, catalogue: Catalogue, *, num_cpus: int | None = None) -> RayServe:
        import ray

        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        port = _free_port()
        deploy(catalogue, port)
        return cls(f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


async def measure_remote(
    url: str,
    client: Callable[[str], RemoteClassifier],
    name: str,
    mode: str,
    photos: Sequence[bytes],
    concurrency: int,
    seconds: float,
) -> tuple[LoadResult, ModelStatus | None]:
    """Closed-loop load through the bot's client; the model deployment's status after it (batches)."""
    async with client(url) as remote:
        before = remote.models().get(name)

        async def call(data: bytes) -> Any:
            return await remote.classify(data, mode)

        # A warm-up that fills the queues, then the window, measured with the whole tree's CPU.
        warmup = max(1.0, 0.15 * seconds)
        await run_load(call, photos, concurrency=concurrency, seconds=0.0, warmup_s=warmup)
        start_cpu = tree_cpu_seconds(os.getpid())
        done, failed, window, _ = await run_load(
            call, photos, concurrency=concurrency, seconds=seconds, warmup_s=0.0
        )
        cpu = tree_cpu_seconds(os.getpid()) - start_cpu
        await remote.refresh()
        after = remote.models().get(name)
    result = summarise(name, "ray-serve", concurrency, done, failed, window, cpu)
    mean_batch = _mean_batch(before, after)
    return LoadResult(**{**asdict(result), "mean_batch": mean_batch}), after


def remote_client(catalogue: Catalogue, store: Any, timeout_s: float) -> Callable[[str], RemoteClassifier]:
    def make(url: str) -> RemoteClassifier:
        config = RemoteConfig(url, timeout_s=timeout_s, status_poll_s=0)
        return RemoteClassifier(config, store, catalogue=catalogue, queue_size=4096)

    return make


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of `root` and every live descendant (Ray's processes descend from the driver);
    the load of the window includes the callers' wait, so this counts what the work cost."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid, cpu in times.items():
        walk, seen = pid, 0
        while walk not in (root, 0, 1) and seen < 64:
            walk, seen = parents.get(walk, 0), seen + 1
        if walk == root:
            total += cpu
    return total


def _mean_batch(before: ModelStatus | None, after: ModelStatus | None) -> float | None:
    if before is None or after is None:
        return None
    calls = after.batches.get("batches", 0) - before.batches.get("batches", 0)
    rows = after.batches.get("rows", 0) - before.batches.get("rows", 0)
    return rows / calls if calls > 0 else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
