"""The typed configs of inference on Ray Serve: the service's (SERVE_*) and the bot's (INFERENCE_*).

Plain values: `photobot.settings` builds them from the environment without importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    """The Ray Serve application's knobs (SERVE_* settings; `photobot serve inference`)."""

    host: str = "127.0.0.1"  # where Ray Serve's HTTP proxy listens (0.0.0.0 for other machines)
    port: int = 8000
    max_batch: int = 16  # rows per model call (`@serve.batch`, a row per digit), as ENGINE_MAX_BATCH
    batch_wait_ms: float = 5.0  # how long the first photo of a batch waits for others (batch_wait_timeout_s)
    min_replicas: int = 1  # autoscaling bounds of every deployment
    max_replicas: int = 2
    target_ongoing_requests: float = 16.0  # requests per replica the autoscaler aims at
    cpus_per_replica: float = 1.0
    gpus_per_replica: float | None = None  # None: one GPU a model replica where the cluster has GPUs

    @property
    def batch_wait_s(self) -> float:
        return self.batch_wait_ms / 1000.0


@dataclass(frozen=True)
class RemoteConfig:
    """How the bot reaches the service (INFERENCE_URL, INFERENCE_TIMEOUT_S)."""

    url: str
    # Each try; above the service's own deadline (ENGINE_DEADLINE_S, 10 s), so a late photo is answered
    # "took too long" by the service, and only a service that says nothing at all is given up on.
    timeout_s: float = 12.0
    retries: int = 1  # after a connection error, a timeout or a 5xx: Ray's proxy routes it anew
    status_poll_s: float = 2.0  # how often the models' versions are read for /models and the buttons
