"""The engine's figures as Prometheus reads them: the classifier's own report (`models()`) turned into
metrics at scrape time — versions always, the batching workers' counts only for an engine in-process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference.classifier import ModelStatus
from inference.metrics import EngineCollector, batch_buckets


def status(name: str, version: int | None, sizes: dict[int, int]) -> ModelStatus:
    rows = sum(size * calls for size, calls in sizes.items())
    batches = {"batches": sum(sizes.values()), "requests": 9, "rows": rows, "expired": 1, "failed": 2}
    return ModelStatus(
        name, version, None, (), "litert", "cpu:0", 1.0, 1, 3, {**batches, "sizes": sizes}, {}, in_workers=4
    )


def samples(engine: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    report = {"flowers": status("flowers", 3, {1: 2, 5: 1, 16: 1}), "pets": status("pets", None, {})}
    registry = CollectorRegistry()
    registry.register(EngineCollector(lambda: report, engine=engine))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_report_becomes_versions_queues_counters_and_a_batch_size_histogram() -> None:
    found = samples(engine=True)
    assert found[("photobot_model_version", (("model", "flowers"),))] == 3
    assert found[("photobot_model_version", (("model", "pets"),))] == 0  # nothing serves it
    flowers = (("model", "flowers"),)
    assert found[("photobot_engine_queued", flowers)] == 3
    assert found[("photobot_engine_batches_total", flowers)] == 4
    assert found[("photobot_engine_rows_total", flowers)] == 23
    assert found[("photobot_engine_expired_total", flowers)] == 1
    assert found[("photobot_engine_failed_total", flowers)] == 2
    assert found[("photobot_engine_in_decode_workers_total", flowers)] == 4
    assert found[("photobot_model_swaps_total", flowers)] == 1
    bucket = {
        le: found[("photobot_engine_batch_rows_bucket", (("le", le), ("model", "flowers")))]
        for le in ("1.0", "4.0", "8.0", "16.0", "+Inf")
    }
    assert bucket == {"1.0": 2, "4.0": 2, "8.0": 3, "16.0": 4, "+Inf": 4}
    assert found[("photobot_engine_batch_rows_sum", flowers)] == 23
    assert found[("photobot_engine_batch_rows_count", flowers)] == 4


def test_with_the_engine_elsewhere_only_the_versions_are_reported() -> None:
    names = {name for name, _ in samples(engine=False)}
    assert names == {"photobot_model_version"}


def test_batch_buckets_are_cumulative() -> None:
    assert batch_buckets({3: 2, 300: 1})[:3] == [("1.0", 0.0), ("2.0", 0.0), ("4.0", 2.0)]
    assert batch_buckets({3: 2, 300: 1})[-2:] == [("256.0", 2.0), ("+Inf", 3.0)]
