"""`photobot serve inference`: the models on Ray Serve, for bots started with INFERENCE_URL.

    photobot serve inference                      # a local Ray cluster on this machine
    RAY_ADDRESS=auto photobot serve inference     # the Ray cluster this machine belongs to (`ray start`)

It seeds the shipped models into a fresh DATA_DIR (as every command that serves does), deploys one Ray
Serve application — an HTTP ingress that prepares photos, one deployment per catalogue model
(`inference.remote.serve_app`) — prints the URL to give the bots as INFERENCE_URL, and runs until
stopped (Ctrl-C, SIGTERM), then deletes the application. The models follow promotions by themselves.
A model taught from the chat after the start gets its deployment within CATALOGUE_POLL_S: the
application is deployed again (Ray Serve updates it in place, serving meanwhile).

Settings: SERVE_* (where the proxy listens, batching, autoscaling bounds, CPUs and GPUs per replica;
with SERVE_GPUS_PER_REPLICA empty, model replicas take one GPU each where the cluster has GPUs), and
ENGINE_* for the ingress's decoding, deadline and queue. With METRICS_PORT, the local cluster it starts
serves its Prometheus metrics there (Ray's, Ray Serve's and the application's:
`inference.remote.metrics`). Needs the `cluster` extra: pip install 'photobot[cluster]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from photobot.errors import UserFacingError
from photobot.settings import Settings

if TYPE_CHECKING:
    from ray import serve

    from inference.catalogue import Catalogue

APP_NAME = "photobot"
CATALOGUE_POLL_S = 10.0

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["inference"], help="what to serve: the models (inference)")
    parser.add_argument(
        "--address",
        help="a Ray cluster to join (default: RAY_ADDRESS, else a local cluster on this machine)",
    )
    parser.add_argument(
        "--num-cpus", type=int, help="CPUs of the local cluster Ray starts (default: every core)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise UserFacingError(
            "Ray Serve is not installed: pip install 'photobot[cluster]' (or ray[serve])"
        ) from None
    from photobot.serving import seed_models
    from photobot.wiring import taught_catalogue

    seed_models(settings)
    ray.init(
        address=args.address,
        num_cpus=args.num_cpus,
        include_dashboard=False,
        **_metrics_port(args, settings),
    )
    try:
        url = start_serve(settings)
        catalogue = taught_catalogue(settings)
        deploy(settings, catalogue)
        print(f"PhotoBot inference on Ray Serve: {url} (models: {', '.join(catalogue.names)})", flush=True)
        if settings.metrics_port and _starts_a_cluster(args):
            print(f"Prometheus metrics of this Ray node: {_metrics_url(settings)}", flush=True)
        print(f"Start the bots with INFERENCE_URL={url}", flush=True)
        _follow_catalogue(settings, catalogue)
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()
    return 0


def _starts_a_cluster(args: argparse.Namespace) -> bool:
    """Whether ray.init starts a local cluster (no --address, no RAY_ADDRESS) rather than joining one."""
    return not (args.address or os.environ.get("RAY_ADDRESS"))


def _metrics_port(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """METRICS_PORT as the metrics export port of the cluster this command starts: that node's Ray, Ray
    Serve and PhotoBot figures (`inference.remote.metrics`). A cluster it joins has its own, set by
    `ray start --metrics-export-port` on each node."""
    if not settings.metrics_port:
        return {}
    if not _starts_a_cluster(args):
        log.warning(
            "METRICS_PORT is not used when joining a Ray cluster: scrape each node's "
            "`ray start --metrics-export-port`"
        )
        return {}
    return {"_metrics_export_port": settings.metrics_port}


def _metrics_url(settings: Settings) -> str:
    # Ray's metrics agent listens on every interface of the node (METRICS_LISTEN is not Ray's to take).
    return f"http://127.0.0.1:{settings.metrics_port}/metrics"


def start_serve(settings: Settings) -> str:
    """Start Ray Serve's HTTP proxy where SERVE_HOST / SERVE_PORT say (Ray must be initialised);
    returns the URL the bots use."""
    from ray import serve

    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    host = "127.0.0.1" if settings.serve.host in ("0.0.0.0", "::") else settings.serve.host
    return f"http://{host}:{settings.serve.port}"


def deploy(settings: Settings, catalogue: Catalogue) -> None:
    """Deploy (or update) the application for `catalogue` and wait until every replica serves."""
    from ray import serve

    serve.run(application(settings, catalogue), name=APP_NAME, route_prefix="/")


def application(settings: Settings, catalogue: Catalogue) -> serve.Application:
    """The Ray Serve application of these settings: GPUs per model replica where the cluster has them."""
    from inference.remote.serve_app import build_app, cluster_gpus
    from photobot.serving import model_store

    gpus = settings.serve.gpus_per_replica
    if gpus is None:
        gpus = 1.0 if cluster_gpus() > 0 else 0.0
    # The replicas open the model store themselves (on whichever node runs them): they get the settings
    # they need for it, without the bot's token.
    settings = dataclasses.replace(settings, telegram_bot_token=None)
    return build_app(
        functools.partial(model_store, settings),
        catalogue,
        settings.engine,
        settings.serve,
        gpus=gpus,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        log_format=settings.log_format,
    )


def _follow_catalogue(settings: Settings, catalogue: Catalogue) -> None:
    """Until SIGINT or SIGTERM: deploy again when the models taught from the chat change."""
    from photobot.wiring import taught_catalogue

    stop = threading.Event()

    def request_stop(*_: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(CATALOGUE_POLL_S):
            try:
                changed = taught_catalogue(settings)
            except Exception:
                log.exception("Reading the taught models failed; will try again")
                continue
            if list(changed) != list(catalogue):
                log.info("The models changed (%s): deploying again", ", ".join(changed.names))
                deploy(settings, changed)
                catalogue = changed
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
