"""What the bot counts for Prometheus: photos answered and how long they took, refusals and errors by kind,
photos in progress, flood drops and feedback taps (`BotMetrics`); and `photobot worker`'s jobs
(`WorkerMetrics`).

Recorded where they happen, a few `inc` / `observe` calls per photo: each takes prometheus_client's lock
for a handful of instructions and none is held across an await. The engine's own figures (batches,
queues, the versions serving) are not counted here: `inference.metrics.EngineCollector` reads them from
the classifier when Prometheus scrapes. Every bot has its own registry (tests run several bots in one
process); the composition root serves it when METRICS_PORT is set (`photobot.metrics`), and without
it a bot's `BotMetrics()` records nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from inference.errors import InferenceError, counted_as
from inference.metrics import LATENCY_BUCKETS

NONE = "none"  # the model label of a photo that is neither (answered "not recognised" in auto mode)
# A retraining job: a minute (digits, a few epochs) to an hour (flowers on a CPU).
JOB_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


class BotMetrics:
    """The bot's counters and histograms in `registry`; with no registry, recording does nothing."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.enabled = registry is not None
        self._answered = Counter(
            "photobot_photos_answered",
            "Photos answered, by the model that answered (none: neither) and the answer's status",
            ["model", "status"],
            registry=registry,
        )
        self._answer_seconds = Histogram(
            "photobot_answer_seconds",
            "From a photo's update to its answer sent: download, models, database, reply",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._classify_seconds = Histogram(
            "photobot_classify_seconds",
            "The classifier's own time for a photo: decoding, queue and model (the service's round trip "
            "with INFERENCE_URL)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._in_progress = Gauge(
            "photobot_photos_in_progress",
            "Photos being downloaded, answered or stored",
            registry=registry,
        )
        self._refused = Counter(
            "photobot_photos_refused",
            "Photos not answered because of the photo or the load: busy, too_large, unsupported, "
            "not_an_image",
            ["reason"],
            registry=registry,
        )
        self._errors = Counter(
            "photobot_errors",
            "Failures on the bot's side, by kind: deadline, model_unavailable, inference_unavailable, "
            "worker_lost, download_timeout, download_failed, telegram, database, handler",
            ["kind"],
            registry=registry,
        )
        self._flood = Counter(
            "photobot_flood_dropped",
            "Updates dropped by a per-user flood limit (photos, updates)",
            ["limit"],
            registry=registry,
        )
        self._feedback = Counter(
            "photobot_feedback",
            "Feedback on answers, a button tap or a typed number: correct, wrong (both stored), already, "
            "stale, not_yours, malformed",
            ["outcome"],
            registry=registry,
        )

    @contextlib.contextmanager
    def photo(self) -> Iterator[None]:
        """A photo in progress, from its download to its answer."""
        if not self.enabled:
            yield
            return
        self._in_progress.inc()
        try:
            yield
        finally:
            self._in_progress.dec()

    def answered(self, model: str | None, status: str, answer_s: float, classify_s: float) -> None:
        if self.enabled:
            name = model or NONE
            self._answered.labels(name, status).inc()
            self._answer_seconds.labels(name).observe(answer_s)
            self._classify_seconds.labels(name).observe(classify_s)

    def refused(self, reason: str) -> None:
        if self.enabled:
            self._refused.labels(reason).inc()

    def error(self, kind: str) -> None:
        if self.enabled:
            self._errors.labels(kind).inc()

    def inference_error(self, error: InferenceError) -> None:
        """A photo the classifier did not answer: a refusal or an error, by the error's class."""
        counter, label = counted_as(error)
        if counter == "refused":
            self.refused(label)
        else:
            self.error(label)

    def flood_dropped(self, limit: str) -> None:
        if self.enabled:
            self._flood.labels(limit).inc()

    def feedback(self, outcome: str) -> None:
        if self.enabled:
            self._feedback.labels(outcome).inc()

    def follow_counts(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        """Export counts something keeps anyway (the webhook's `WebhookCounts`), read at each scrape: one
        counter `name`, a sample per key under `label`."""
        if self.registry is not None:
            self.registry.register(_CountsCollector(name, documentation, label, read))


class _CountsCollector(Collector):
    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        self._name, self._documentation, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for key, count in self._read().items():
            family.add_metric([key], count)
        yield family


class WorkerMetrics:
    """What `photobot worker` counts: the retraining jobs it ran, how long they took, the one running, and
    failures to look for jobs (the database or the Bot API away). No registry: nothing is recorded."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.enabled = registry is not None
        self._jobs = Counter(
            "photobot_worker_jobs",
            "Retraining jobs this worker ran, by model, the job's status and its gate's decision",
            ["model", "status", "decision"],
            registry=registry,
        )
        self._job_seconds = Histogram(
            "photobot_worker_job_seconds",
            "A retraining job's time from its start to its end",
            ["model"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self._running = Gauge(
            "photobot_worker_running",
            "The job this worker runs now (1), by model",
            ["model"],
            registry=registry,
        )
        self._poll_errors = Counter(
            "photobot_worker_poll_errors", "Looks for queued jobs that failed", registry=registry
        )

    @contextlib.contextmanager
    def running(self, model: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._running.labels(model).set(1)
        try:
            yield
        finally:
            self._running.labels(model).set(0)

    def ran(self, model: str, status: str, decision: str | None, seconds: float | None) -> None:
        if self.enabled:
            self._jobs.labels(model, status, decision or NONE).inc()
            if seconds is not None:
                self._job_seconds.labels(model).observe(seconds)

    def poll_failed(self) -> None:
        if self.enabled:
            self._poll_errors.inc()
