"""The engine's figures for Prometheus, read when it scrapes: nothing counted twice, nothing on a photo's way.

The batching workers already count what they do (`engine.BatchStats`: model calls, rows, expired and
failed requests, rows per call) and the classifier reports it with what serves (`Classifier.models()`).
`EngineCollector` turns that report into metrics when the registry is collected, so a photo pays nothing
for them. It is called on the thread that serves the scrape (the bot's event loop, see
`photobot.metrics`), the same place `/models` reads the report from.

With INFERENCE_URL the engine runs in the Ray Serve application, which exports its own batches through
Ray's metrics (`inference.remote.metrics`); the bot's collector then reports only the versions the
service serves (`engine=False`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from inference.classifier import ModelStatus

# Seconds, the bot's and the service's latencies alike. A photo is answered in ~0.1 s on an idle bot,
# seconds under load or with Telegram's 30 messages/s; the engine's deadline is 10 s, a download's 30.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Rows per model call: the engine batches up to ENGINE_MAX_BATCH (16 by default) rows, a number's digits
# count a row each.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# BatchStats.snapshot() key → (metric name, help) of the counters exported from it.
_COUNTERS = {
    "batches": ("photobot_engine_batches", "Model calls (micro-batches) run by the batching worker"),
    "requests": ("photobot_engine_requests", "Photos answered by a model call of the batching worker"),
    "rows": ("photobot_engine_rows", "Rows fed to the model (a photo is one row, a number one per digit)"),
    "expired": ("photobot_engine_expired", "Photos dropped unanswered: their deadline passed in the queue"),
    "failed": ("photobot_engine_failed", "Photos whose model call or answer failed"),
}


class EngineCollector(Collector):
    """`models()`'s report as metrics: the serving versions and, for an engine in this process, its
    batching workers' queues and counters."""

    def __init__(self, models: Callable[[], Mapping[str, ModelStatus]], *, engine: bool = True) -> None:
        self._models = models
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        statuses = self._models()
        version = GaugeMetricFamily(
            "photobot_model_version", "The model version this process serves (0: none)", labels=["model"]
        )
        for name, status in statuses.items():
            version.add_metric([name], status.version or 0)
        yield version
        if self._engine:
            yield from _engine_metrics(statuses)


def _engine_metrics(statuses: Mapping[str, ModelStatus]) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        "photobot_engine_queued", "Photos waiting in a model's batching queue", labels=["model"]
    )
    swaps = CounterMetricFamily(
        "photobot_model_swaps",
        "Versions switched to without a restart (promotions, rollbacks)",
        labels=["model"],
    )
    in_workers = CounterMetricFamily(
        "photobot_engine_in_decode_workers",
        "Photos whose model ran in the decode processes (a small LiteRT model), not in a batch",
        labels=["model"],
    )
    counters = {
        key: CounterMetricFamily(name, text, labels=["model"]) for key, (name, text) in _COUNTERS.items()
    }
    sizes = HistogramMetricFamily("photobot_engine_batch_rows", "Rows per model call", labels=["model"])
    for name, status in statuses.items():
        stats: Mapping[str, Any] = status.batches
        queued.add_metric([name], status.queued)
        swaps.add_metric([name], status.swaps)
        in_workers.add_metric([name], status.in_workers)
        for key, family in counters.items():
            family.add_metric([name], float(stats.get(key, 0)))
        sizes.add_metric(
            [name], buckets=batch_buckets(stats.get("sizes", {})), sum_value=stats.get("rows", 0)
        )
    yield from (queued, swaps, in_workers, *counters.values(), sizes)


def batch_buckets(sizes: Mapping[int, int]) -> list[tuple[str, float]]:
    """The histogram's cumulative buckets from `BatchStats.sizes` (rows per call → calls)."""
    buckets: list[tuple[str, float]] = []
    for bound in BATCH_BUCKETS:
        calls = float(sum(count for rows, count in sizes.items() if rows <= bound))
        buckets.append((str(float(bound)), calls))  # "1.0", as prometheus_client's own histograms
    buckets.append(("+Inf", float(sum(sizes.values()))))
    return buckets
