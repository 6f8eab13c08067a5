"""`photobot serve inference` as an operator runs it: a process that starts a local Ray cluster, deploys
the application over DATA_DIR's model store, prints the INFERENCE_URL for the bots, answers them, serves
the replicas' metrics on the Ray node's port (METRICS_PORT), and on SIGTERM deletes the application,
shuts Ray down and exits 0."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from inference.catalogue import DEFAULT_CATALOGUE
from inference.model_store import ModelStore
from inference.remote.client import RemoteClassifier
from inference.remote.config import RemoteConfig
from tests.remote.conftest import free_port
from tests.support.models import add_version, digit_meta, digit_photo, flower_meta, load_mnist_subset

pytestmark = pytest.mark.ray

START_TIMEOUT_S = 600  # a fresh Ray cluster, TensorFlow imported and two models converted, on 2 busy cores


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def ray_samples(url: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def wait_for_sample(read, name: str, timeout: float = 120.0) -> Samples:
    """The node's samples once `name` is among them (the replicas' metrics reach the node's agent every
    few seconds)."""
    for _ in range(int(timeout)):
        samples = await asyncio.to_thread(read)
        if any(found == name for found, _ in samples):
            return samples
        await asyncio.sleep(1.0)
    raise AssertionError(f"{name} never appeared in the node's metrics")


def total(samples: Samples, name: str, **labels: str) -> float:
    """`name`'s samples with these labels, summed over the rest (replicas, nodes)."""
    return sum(v for (found, tags), v in samples.items() if found == name and set(labels.items()) <= tags)


def max_of(samples: Samples, name: str, **labels: str) -> float:
    return max(v for (found, tags), v in samples.items() if found == name and set(labels.items()) <= tags)


def lines_of(stream) -> queue.Queue:
    found: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            found.put(line)
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    return found


async def test_serve_inference_prints_the_url_answers_and_stops_on_sigterm(
    tmp_path, digit_model_file, tiny_flower_model, mnist_path
):
    data = tmp_path / "data"
    store = ModelStore(data / "models")
    add_version(store, "digits", digit_model_file, digit_meta())
    model_file, ood = tiny_flower_model(tmp_path / "flowers.keras")
    add_version(store, "flowers", model_file, flower_meta(ood))
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "SERVE_PORT": str(port),
        "SERVE_CPUS_PER_REPLICA": "0.5",
        "SERVE_MAX_REPLICAS": "1",
        "ENGINE_POOL": "thread",
        "ENGINE_WORKERS": "1",
        "METRICS_PORT": str(metrics_port),
        "LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "photobot", "serve", "inference", "--num-cpus", "2"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output = lines_of(process.stdout)
        printed = []
        while not any(line.startswith("Start the bots with INFERENCE_URL=") for line in printed):
            line = output.get(timeout=START_TIMEOUT_S)
            assert line is not None, "".join(printed)
            printed.append(line)
        url = printed[-1].strip().split("=", 1)[1]
        assert url == f"http://127.0.0.1:{port}"
        assert any("models: digits, flowers" in line for line in printed)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert f"Prometheus metrics of this Ray node: {metrics_url}\n" in printed

        _, _, x_test, _ = load_mnist_subset(mnist_path, n_test=1)
        config = RemoteConfig(url, timeout_s=60.0, status_poll_s=0)
        async with RemoteClassifier(config, store, catalogue=DEFAULT_CATALOGUE) as bot_side:
            answer = await bot_side.classify(digit_photo(x_test[0]), "digit")
            assert (answer.model, answer.version) == ("digits", 1)
            assert {name: s.version for name, s in bot_side.models().items()} == {"digits": 1, "flowers": 1}

        # The replicas' figures, through the Ray node's metrics port (Ray reports them every few seconds).
        def served() -> Samples:
            return ray_samples(metrics_url)

        samples = await wait_for_sample(served, "ray_photobot_photos_answered_total")
        assert total(samples, "ray_photobot_photos_answered_total", model="digits") == 1
        assert total(samples, "ray_photobot_classify_seconds_count", model="digits") == 1
        samples = await wait_for_sample(served, "ray_photobot_engine_batch_rows_count")
        assert total(samples, "ray_photobot_engine_batch_rows_count", model="digits") >= 1
        assert max_of(samples, "ray_photobot_model_version", model="digits") == 1
        assert max_of(samples, "ray_photobot_model_version", model="flowers") == 1
        assert any(name.startswith("ray_serve_") for name, _ in samples)  # Ray Serve's own, beside ours

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=180) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
