"""The batching worker with a real (tiny) Keras digit model: batching, isolation, bounds, deadlines."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pytest

from inference import digits
from inference.engine import BatchWorker, EngineConfig
from inference.errors import DeadlineExceeded, EngineBusy, InferenceError
from inference.loading import load_version
from inference.model_store import ModelStore
from tests.support.models import add_version, digit_meta, load_mnist_subset


@pytest.fixture(scope="module")
def loaded(converted_digit_model_file, tmp_path_factory):
    """The tiny digit model as served after its first start (its LiteRT conversion copied along)."""
    store = ModelStore(tmp_path_factory.mktemp("store"))
    version = add_version(store, "digits", converted_digit_model_file, digit_meta())
    return load_version(version, max_batch=32, padded_sizes=EngineConfig().padded_sizes())


@pytest.fixture(scope="module")
def crops(mnist_path):
    _, _, x_test, y_test = load_mnist_subset(mnist_path, n_test=80)
    return np.stack([digits.normalize_digit(x) for x in x_test])[..., None], y_test


def first_row(outputs):
    return np.asarray(outputs)[0]


async def test_queued_callers_share_model_calls_and_each_gets_its_own_answer(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig(max_batch=32, max_wait_ms=1.0))
    deadline = time.monotonic() + 30
    futures = [worker.submit(loaded, x[i : i + 1], first_row, deadline=deadline) for i in range(len(x))]
    worker.start()
    try:
        results = await asyncio.gather(*futures)
    finally:
        worker.close()
    assert worker.stats.batches == 3  # 80 callers, 32 rows per call
    assert worker.stats.requests == 80
    assert worker.stats.sizes == {32: 2, 16: 1}
    alone = np.asarray(loaded.model.predict_on_batch(x))
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.value, alone[i], atol=1e-5)
        assert result.batch_rows in (32, 16)


async def test_concurrent_callers_are_batched_while_the_worker_runs(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig(max_batch=64, max_wait_ms=20.0))
    worker.start()
    try:

        async def call(i):
            await asyncio.sleep(0)
            return await worker.submit(loaded, x[i : i + 1], first_row, deadline=time.monotonic() + 30)

        results = await asyncio.gather(*(call(i) for i in range(len(x))))
    finally:
        worker.close()
    assert worker.stats.requests == 80
    assert worker.stats.batches < 80 / 4
    labels = np.argmax(np.asarray(loaded.model.predict_on_batch(x)), axis=1)
    assert [int(np.argmax(r.value)) for r in results] == labels.tolist()


async def test_photo_with_several_digits_gets_its_own_rows(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig(max_batch=32))
    deadline = time.monotonic() + 30
    one = worker.submit(loaded, x[0:1], np.asarray, deadline=deadline)
    four = worker.submit(loaded, x[1:5], np.asarray, deadline=deadline)
    two = worker.submit(loaded, x[5:7], np.asarray, deadline=deadline)
    worker.start()
    try:
        results = [r.value for r in await asyncio.gather(one, four, two)]
    finally:
        worker.close()
    assert [len(r) for r in results] == [1, 4, 2]
    assert worker.stats.batches == 1
    alone = np.asarray(loaded.model.predict_on_batch(x[:7]))
    np.testing.assert_allclose(np.concatenate(results), alone, atol=1e-5)


async def test_a_request_that_breaks_the_batch_fails_alone(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig(max_batch=32))
    deadline = time.monotonic() + 30
    good = [worker.submit(loaded, x[i : i + 1], first_row, deadline=deadline) for i in range(5)]
    bad = worker.submit(loaded, np.zeros((1, 20, 20, 1), np.float32), first_row, deadline=deadline)
    more = [worker.submit(loaded, x[i : i + 1], first_row, deadline=deadline) for i in range(5, 10)]
    worker.start()
    try:
        results = await asyncio.gather(*good, bad, *more, return_exceptions=True)
    finally:
        worker.close()
    assert isinstance(results[5], InferenceError)
    answers = [r for i, r in enumerate(results) if i != 5]
    assert all(not isinstance(r, BaseException) for r in answers)
    labels = np.argmax(np.asarray(loaded.model.predict_on_batch(x[:10])), axis=1)
    assert [int(np.argmax(r.value)) for r in answers] == labels.tolist()
    assert worker.stats.failed == 1


async def test_a_failing_answer_step_fails_only_its_own_request(loaded, crops):
    x, _ = crops

    def broken(outputs):
        raise ValueError("labels do not match the outputs")

    worker = BatchWorker("digits", EngineConfig())
    deadline = time.monotonic() + 30
    ok = worker.submit(loaded, x[0:1], first_row, deadline=deadline)
    failing = worker.submit(loaded, x[1:2], broken, deadline=deadline)
    worker.start()
    try:
        results = await asyncio.gather(ok, failing, return_exceptions=True)
    finally:
        worker.close()
    assert results[0].value.shape == (10,)
    assert isinstance(results[1], InferenceError)
    assert worker.stats.batches == 1


async def test_a_full_queue_refuses_at_once_with_engine_busy(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig(queue_size=4))
    deadline = time.monotonic() + 30
    accepted = [worker.submit(loaded, x[i : i + 1], first_row, deadline=deadline) for i in range(4)]
    with pytest.raises(EngineBusy, match="try again"):
        worker.submit(loaded, x[4:5], first_row, deadline=deadline)
    worker.start()
    try:
        results = await asyncio.gather(*accepted)
    finally:
        worker.close()
    assert len(results) == 4
    assert worker.stats.requests == 4


async def test_an_expired_request_is_answered_with_deadline_exceeded_and_costs_no_model_time(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig())
    late = worker.submit(loaded, x[0:1], first_row, deadline=time.monotonic() + 0.01)
    in_time = worker.submit(loaded, x[1:2], first_row, deadline=time.monotonic() + 30)
    await asyncio.sleep(0.05)
    worker.start()
    try:
        results = await asyncio.gather(late, in_time, return_exceptions=True)
    finally:
        worker.close()
    assert isinstance(results[0], DeadlineExceeded)
    assert results[1].value.shape == (10,)
    assert worker.stats.expired == 1
    assert worker.stats.rows == 1


async def test_a_cancelled_caller_is_skipped(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig())
    deadline = time.monotonic() + 30
    gone = worker.submit(loaded, x[0:1], first_row, deadline=deadline)
    kept = worker.submit(loaded, x[1:2], first_row, deadline=deadline)
    gone.cancel()
    worker.start()
    try:
        result = await kept
    finally:
        worker.close()
    assert result.value.shape == (10,)
    assert worker.stats.rows == 1


async def test_close_answers_what_is_queued_then_refuses(loaded, crops):
    x, _ = crops
    worker = BatchWorker("digits", EngineConfig())
    queued = worker.submit(loaded, x[0:1], first_row, deadline=time.monotonic() + 30)
    worker.start()
    await asyncio.to_thread(worker.close)
    assert (await queued).value.shape == (10,)
    with pytest.raises(InferenceError, match="shutting down"):
        worker.submit(loaded, x[1:2], first_row, deadline=time.monotonic() + 30)


def test_padding_to_fixed_shapes_returns_the_unpadded_answers(loaded, crops):
    x, _ = crops
    padded = dataclasses.replace(loaded, padded_sizes=(1, 2, 4, 8))
    plain = np.asarray(loaded.model.predict_on_batch(x[:19]))
    for rows in (1, 3, 5, 8, 19):  # 19 rows run as chunks of 8, 8 and 3 (padded to 4)
        out = np.asarray(padded.run(x[:rows]))
        assert out.shape == (rows, 10)
        np.testing.assert_allclose(out, plain[:rows], atol=1e-5)


def test_padded_sizes_default_to_powers_of_two_up_to_max_batch():
    assert EngineConfig(max_batch=32).padded_sizes() == (1, 2, 4, 8, 16, 32)
    assert EngineConfig(max_batch=24).padded_sizes() == (1, 2, 4, 8, 16, 24)
    assert EngineConfig(batch_sizes=(16, 4, 1)).padded_sizes() == (1, 4, 16)
    assert EngineConfig(workers=3).decode_workers() == 3
    assert EngineConfig().decode_workers() >= 1
