"""Prometheus endpoints of the PhotoBot processes (METRICS_LISTEN:METRICS_PORT, `GET /metrics`).

The figures are defined in the rooms that make them (`bot.metrics`, `inference.metrics`,
`inference.remote.metrics`); this module only serves a registry:

- `photobot run` and `photobot worker` serve their registry from their own event loop (`MetricsServer`,
  aiohttp, as the bot's transport): the collectors read the classifier's report on the loop that owns
  it, and a loop that is stuck shows as a scrape that fails (`up == 0`), which is itself the alert.
- `photobot serve inference` has no endpoint of its own: its replicas are Ray actors on any node, so
  their figures go through Ray's metrics, which each Ray node serves on its metrics export port
  (`photobot serve inference` sets it to METRICS_PORT for the cluster it starts).

Each process also reports its CPU, memory, open files and garbage collections (prometheus_client's
process, platform and GC collectors). METRICS_PORT=0 (the default) serves nothing: several processes
on one host need a port each, so there is no port that could be everyone's default.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler

from photobot.errors import UserFacingError

PATH = "/metrics"


def process_registry() -> CollectorRegistry:
    """A registry with this process's own figures (CPU, memory, file descriptors, GC, Python version)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsServer:
    """`GET /metrics` of `registry` on host:port, served on the running event loop."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    async def start(self) -> None:
        """Listen; a port already taken is one line that names METRICS_PORT."""
        app = web.Application()
        app.router.add_get(PATH, make_aiohttp_handler(self.registry))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as error:
            await runner.cleanup()
            raise in_use(self.host, self.port, error) from None
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def in_use(host: str, port: int, error: OSError) -> UserFacingError:
    return UserFacingError(
        f"cannot serve metrics on {host}:{port} ({error.strerror or error}): another process uses "
        "METRICS_PORT there; give each PhotoBot process on a host its own METRICS_PORT (0 turns it off)"
    )
