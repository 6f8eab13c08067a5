"""The remote room's fixtures: one local Ray cluster for the session (2 CPUs), shut down at its end."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[int]:
    """Ray (num_cpus=2: the machine's two cores, shared with the tests) with Serve's HTTP proxy on a free
    port of 127.0.0.1; the port. Starting Ray takes seconds, so the session shares one cluster."""
    import ray
    from ray import serve

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="photobot-tests")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
