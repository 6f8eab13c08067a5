"""`photobot bench inference` end to end on a tiny real model: the report's shape, and a clean hot swap."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import inference as bench
from benchmarks.inference import arithmetic_peak, percentile
from inference.model_store import ModelStore, ModelVersion
from photobot.cli import main
from tests.support.models import add_version, digit_meta, digit_photo, load_mnist_subset


@pytest.mark.process
def test_bench_inference_reports_engine_baselines_ratios_and_a_clean_hot_swap(
    tmp_path, monkeypatch, mnist_path, tiny_digit_model, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    store = ModelStore(tmp_path / "var" / "models")
    add_version(store, "digits", tiny_digit_model(tmp_path / "d.keras"), digit_meta())
    argv = ["bench", "inference", "--models", "digits", "--concurrency", "1,4", "--seconds", "0.5"]
    argv += ["--photos", "12", "--swap-seconds", "3", "--swap-every", "0.6", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    cells = {(r["method"], r["concurrency"]) for r in report["rows"]}
    assert cells == {(m, c) for m in ("engine", "predict", "call") for c in (1, 4)}
    assert all(r["failed"] == 0 and r["answered"] > 0 for r in report["rows"])
    assert {(r["versus"], r["concurrency"]) for r in report["ratios"]} == {
        (m, c) for m in ("predict", "call") for c in (1, 4)
    }
    swap = report["hot_swap"]
    assert swap["failed"] == 0
    assert swap["swaps"] >= 2
    assert swap["versions_seen"] == [1, 2]
    assert store.active_version("digits") == 1  # the swap ran on a copy of the store


def test_arithmetic_peak_and_percentiles():
    peak = arithmetic_peak(seconds=0.2)
    assert peak.cores >= 1 and peak.measured_gflops > 0
    assert peak.flops_per_cycle in (8, 16, 32, 64)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0


class _CountingModel:
    """Records how many threads are inside `predict` at once."""

    def __init__(self) -> None:
        self.inputs = [SimpleNamespace(shape=(None, 28, 28, 1))]
        self.lock = threading.Lock()
        self.inside = self.most = self.calls = 0

    def predict(self, x, verbose=0):
        with self.lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.02)
        with self.lock:
            self.inside -= 1
        return np.eye(10, dtype=np.float32)[np.zeros(len(x), dtype=int)]


def test_per_request_predict_runs_one_at_a_time_on_jax(tmp_path, monkeypatch, mnist_path):
    # Keras' JAX predict empties the model's variables while it runs: two threads in it at once leave
    # the model without weights, so the baseline serialises predict there.
    monkeypatch.setattr(bench, "_backend", lambda: "jax")
    _, _, x_test, _ = load_mnist_subset(mnist_path)
    photos = [digit_photo(x_test[i], seed=i) for i in range(4)]
    model = _CountingModel()
    version = ModelVersion("digits", 1, tmp_path, digit_meta())
    baseline = bench.PerRequest(version, model, threads=4, limits={"max_bytes": 10**7, "max_pixels": 10**7})
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda data: baseline.answer(data, "predict"), photos * 3))
    finally:
        baseline.close()
    assert model.calls > 0
    assert model.most == 1
