"""The Ray Serve application's figures, recorded through Ray Serve's metrics API.

Its replicas are Ray actors, as many as the autoscaler decides, on any node: a Prometheus endpoint per
replica would need a port each and a way for Prometheus to find them. Ray's metrics are recorded in the
replica and served by each node's metrics agent on one port (`ray start --metrics-export-port`, or
METRICS_PORT for the local cluster `photobot serve inference` starts), beside Ray Serve's own (requests,
errors and latency per deployment, replicas' queues, autoscaling) and the node's. Ray adds `ray_`
before each name and the deployment, replica and application as labels; the names are otherwise the
bot's where they mean the same (`photobot_photos_answered_total` is the bot's count of photos it
answered, `ray_photobot_photos_answered_total` the service's).

Created in a replica's `__init__` (a metric belongs to the process that records it), never at import.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from inference.errors import InferenceError, counted_as
from inference.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from inference.prediction import Prediction

NONE = "none"


class IngressMetrics:
    """The ingress (PhotoAnswers): photos answered, refused or failed, the time each took, in progress."""

    def __init__(self) -> None:
        self._answered = Counter(
            "photobot_photos_answered_total",
            description="Photos the service answered, by model (none: neither) and status",
            tag_keys=("model", "status"),  # type: ignore[arg-type]  # Ray annotates it as a 1-tuple
        )
        self._seconds = Histogram(
            "photobot_classify_seconds",
            description="A photo's time in the service: decoding, the model deployments' queues and calls",
            boundaries=list(LATENCY_BUCKETS),
            tag_keys=("model",),
        )
        self._refused = Counter(
            "photobot_photos_refused_total",
            description="Photos refused for the photo or the load: busy, too_large, unsupported",
            tag_keys=("reason",),
        )
        self._errors = Counter(
            "photobot_errors_total",
            description="Photos not answered because something failed (deadline, model_unavailable, "
            "worker_lost)",
            tag_keys=("kind",),
        )
        self._in_progress = Gauge(
            "photobot_photos_in_progress", description="Photos this ingress replica is answering"
        )

    def in_progress(self, count: int) -> None:
        self._in_progress.set(count)

    def answered(self, prediction: Prediction, seconds: float) -> None:
        model = prediction.model or NONE
        self._answered.inc(tags={"model": model, "status": prediction.status})
        self._seconds.observe(seconds, tags={"model": model})

    def failed(self, error: InferenceError) -> None:
        counter, label = counted_as(error)
        if counter == "refused":
            self._refused.inc(tags={"reason": label})
        else:
            self._errors.inc(tags={"kind": label})


class ModelMetrics:
    """A model deployment's replica: its batches, its model calls' time, and the version it serves."""

    def __init__(self, model: str) -> None:
        self._tags = {"model": model}
        self._rows = Histogram(
            "photobot_engine_batch_rows",
            description="Rows per model call (@serve.batch; a number is a row per digit)",
            boundaries=list(BATCH_BUCKETS),
            tag_keys=("model",),
        )
        self._seconds = Histogram(
            "photobot_model_seconds",
            description="One model call on a batch",
            boundaries=list(LATENCY_BUCKETS),
            tag_keys=("model",),
        )
        self._failed = Counter(
            "photobot_engine_failed_total",
            description="Photos whose model call or answer failed",
            tag_keys=("model",),
        )
        self._version = Gauge(
            "photobot_model_version",
            description="The model version this replica serves (0: none)",
            tag_keys=("model",),
        )
        self._version.set(0, tags=self._tags)

    def batch(self, rows: int, seconds: float) -> None:
        self._rows.observe(rows, tags=self._tags)
        self._seconds.observe(seconds, tags=self._tags)

    def failed(self) -> None:
        self._failed.inc(tags=self._tags)

    def serving(self, version: int) -> None:
        self._version.set(version, tags=self._tags)
