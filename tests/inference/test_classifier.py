"""The Classifier end to end: bytes → Prediction with real tiny models in a real model store."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import digits
from inference.catalogue import DEFAULT_CATALOGUE
from inference.classifier import Classifier, prepare_photo, seed_shipped
from inference.engine import EngineConfig
from inference.errors import DeadlineExceeded, EngineBusy, ModelUnavailable, UnsupportedImage
from inference.model_store import ModelStore
from inference.pool import NATIVE_THREAD_VARIABLES, ProcessPool, native_threads
from inference.seeding import SHIPPED_DIR
from inference.taught import Taught, taught_spec
from tests.support.models import (
    FLOWER_CLASSES,
    add_version,
    digit_meta,
    digit_photo,
    flower_files,
    flower_meta,
    load_mnist_subset,
)


@pytest.fixture(scope="module")
def flower_model(tiny_flower_model, tmp_path_factory):
    """The tiny flower model with its LiteRT conversion beside it, and its ood block."""
    return tiny_flower_model(tmp_path_factory.mktemp("flowers") / "flowers.keras", converted=True)


@pytest.fixture(scope="module")
def test_digits(mnist_path):
    _, _, x_test, y_test = load_mnist_subset(mnist_path, n_test=40)
    return x_test, y_test


@pytest.fixture
def store(tmp_path, converted_digit_model_file, flower_model):
    """Both models as a store holds them after its first start: converted for LiteRT."""
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", converted_digit_model_file, digit_meta())
    model_file, ood = flower_model
    add_version(store, "flowers", model_file, flower_meta(ood))
    return store


@pytest.fixture
def new_store(tmp_path, digit_model_file, tiny_flower_model):
    """Both models as newly published versions: no conversion yet (the first start makes it)."""
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", digit_model_file, digit_meta())
    model_file, ood = tiny_flower_model(tmp_path / "flowers.keras")
    add_version(store, "flowers", model_file, flower_meta(ood))
    return store


def config(**changes) -> EngineConfig:
    """One decode process: a test's few photos need no more (those about the pool ask for two)."""
    return EngineConfig(**{"reload_poll_s": 0, "workers": 1, **changes})


async def test_digit_mode_reads_digit_photos(new_store, test_digits):
    x_test, y_test = test_digits
    photos = [digit_photo(x_test[i], seed=i) for i in range(len(x_test))]
    # Keras' engine answers every photo (the batches below); a first start's conversion is tested
    # on its own (test_keras_serves_at_once_…), so none starts here.
    async with Classifier(new_store, config(runtime="keras"), shipped_dir=None) as classifier:
        predictions = await asyncio.gather(*(classifier.classify(p, "digit") for p in photos))
        status = classifier.models()["digits"]
    right = [p.label == str(y) for p, y in zip(predictions, y_test, strict=True)]
    assert np.mean(right) >= 0.8  # a 4-epoch MLP on 3,000 digits, through the real photo reader
    assert {p.model for p in predictions} == {"digits"}
    assert {p.version for p in predictions} == {1}
    first = predictions[0]
    assert set(first.timings_ms) >= {"decode", "preprocess", "queue", "model", "total"}
    assert first.top[0][0] == first.label or first.status != "ok"
    assert status.batches["requests"] == len(photos)
    assert status.batches["batches"] <= len(photos)


async def test_a_taught_model_before_its_first_version_starts_quietly_and_is_not_served(store, caplog):
    pets = taught_spec(Taught("pets", [("dog", {}), ("cat", {})]))
    catalogue = DEFAULT_CATALOGUE.with_model(pets)
    with caplog.at_level(logging.INFO, logger="inference"):
        async with Classifier(store, config(), catalogue=catalogue, shipped_dir=SHIPPED_DIR) as classifier:
            assert classifier.models()["pets"].version is None
            assert classifier.models()["digits"].version is not None
    loud = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "pets" in r.getMessage()
    ]
    assert loud == []  # no "no shipped default … train one", no "nothing to serve"
    assert "pets: no version yet (a model taught from the chat before its first)" in caplog.messages
    assert store.versions("pets") == []


async def test_a_blank_page_is_not_recognized_without_a_model_call(store):
    page = Image.new("RGB", (640, 480), (235, 232, 225))
    buffer = io.BytesIO()
    page.save(buffer, "JPEG")
    async with Classifier(store, config(), shipped_dir=None) as classifier:
        prediction = await classifier.classify(buffer.getvalue(), "digit")
        batches = classifier.models()["digits"].batches["batches"]
    assert prediction.status == "not_recognized"
    assert prediction.label is None
    assert prediction.reason
    assert batches == 0


async def test_flower_mode_answers_with_the_flower_labels(store, flowers_path):
    files = flower_files(flowers_path, 2, offset=300)
    async with Classifier(store, config(), shipped_dir=None) as classifier:
        predictions = await asyncio.gather(*(classifier.classify(f.read_bytes(), "flower") for f, _ in files))
    for prediction in predictions:
        assert prediction.model == "flowers"
        assert len(prediction.top) == len(FLOWER_CLASSES)
        assert {label for label, _ in prediction.top} == set(FLOWER_CLASSES)
        assert sum(p for _, p in prediction.top) == pytest.approx(1.0, abs=1e-4)
        assert prediction.status in ("ok", "unsure", "not_recognized")


async def test_a_bad_photo_fails_alone_among_good_ones(store, test_digits):
    x_test, y_test = test_digits
    photos = [digit_photo(x_test[i], seed=i) for i in range(12)]
    photos[5] = photos[5][: len(photos[5]) // 3]  # truncated JPEG
    photos[8] = b"GIF89a not really"
    async with Classifier(store, config(max_wait_ms=20), shipped_dir=None) as classifier:
        results = await asyncio.gather(
            *(classifier.classify(p, "digit") for p in photos), return_exceptions=True
        )
    assert isinstance(results[5], UnsupportedImage)
    assert isinstance(results[8], UnsupportedImage)
    good = [r for i, r in enumerate(results) if i not in (5, 8)]
    assert all(r.model == "digits" for r in good)
    good_labels = [str(y_test[i]) for i in range(12) if i not in (5, 8)]
    assert sum(r.label == label for r, label in zip(good, good_labels, strict=True)) >= 7


async def test_too_many_waiting_photos_get_engine_busy_at_once(store, test_digits):
    x_test, _ = test_digits
    photo = digit_photo(x_test[0])
    async with Classifier(store, config(queue_size=3), shipped_dir=None) as classifier:
        results = await asyncio.gather(
            *(classifier.classify(photo, "digit") for _ in range(10)), return_exceptions=True
        )
    busy = [r for r in results if isinstance(r, EngineBusy)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(answered) == 3
    assert len(busy) == 7
    assert "try again" in str(busy[0])


async def test_a_photo_past_its_deadline_fails_with_deadline_exceeded(store, test_digits):
    x_test, _ = test_digits
    async with Classifier(store, config(deadline_s=1e-6), shipped_dir=None) as classifier:
        with pytest.raises(DeadlineExceeded):
            await classifier.classify(digit_photo(x_test[0]), "digit")


async def test_unknown_mode_and_missing_models_are_refused(tmp_path, digit_model_file):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", digit_model_file, digit_meta())
    async with Classifier(store, config(), shipped_dir=None) as classifier:
        with pytest.raises(ValueError, match="mode"):
            await classifier.classify(b"...", "portrait")
        with pytest.raises(ModelUnavailable, match="flowers"):
            await classifier.classify(b"...", "flower")
        assert classifier.models()["flowers"].version is None


async def test_start_seeds_an_empty_store_from_the_shipped_defaults(tmp_path, digit_model_file):
    shipped = tmp_path / "shipped"
    (shipped / "digits").mkdir(parents=True)
    shutil.copy2(digit_model_file, shipped / "digits" / "model.keras")
    (shipped / "digits" / "meta.json").write_text(json.dumps(digit_meta(test_accuracy=0.9)))
    store = ModelStore(tmp_path / "models")
    async with Classifier(store, config(), names=("digits",), shipped_dir=shipped) as classifier:
        assert classifier.models()["digits"].version == 1
    assert store.active_version("digits") == 1
    assert store.get("digits", 1).meta["test_accuracy"] == 0.9
    assert "shipped" in store.get("digits", 1).meta["source"]
    assert seed_shipped(store, "flowers", shipped) is None  # nothing shipped for it here


async def test_litert_and_keras_give_the_same_answers(store, test_digits, flowers_path):
    x_test, _ = test_digits
    photos = [digit_photo(x_test[i], seed=i) for i in range(12)]
    photos += [path.read_bytes() for path, _ in flower_files(flowers_path, per_class=2, offset=40)]
    answers = {}
    for runtime in ("lite", "keras"):
        async with Classifier(store, config(runtime=runtime), shipped_dir=None) as classifier:
            answers[runtime] = await asyncio.gather(*(classifier.classify(p, "auto") for p in photos))
    for lite, keras in zip(answers["lite"], answers["keras"], strict=True):
        assert (lite.model, lite.label, lite.status) == (keras.model, keras.label, keras.status)
        assert lite.confidence == pytest.approx(keras.confidence, abs=1e-4)
    assert {a.model for a in answers["lite"]} == {"digits", "flowers"}


async def test_start_logs_backend_and_device_per_model(new_store, caplog):
    caplog.set_level(logging.INFO, logger="inference.classifier")
    async with Classifier(new_store, config(runtime="keras"), shipped_dir=None) as classifier:
        models = classifier.models()
        await classifier.conversions_done()
        assert classifier.models()["digits"].backend == "tensorflow"  # keras: no conversion at all
    assert models["digits"].backend == "tensorflow"
    assert models["digits"].device.startswith("cpu")
    serving = [r.getMessage() for r in caplog.records if "serving" in r.getMessage()]
    assert any("digits v1" in m and "tensorflow" in m and "cpu" in m for m in serving)
    assert any("flowers v1" in m for m in serving)
    assert not list(new_store.root.rglob("*.tflite"))


async def test_keras_serves_at_once_while_litert_converts_then_litert_from_the_cache(
    new_store, test_digits, caplog
):
    caplog.set_level(logging.INFO, logger="inference.classifier")
    photo = digit_photo(test_digits[0][0], seed=0)
    async with Classifier(new_store, config(), shipped_dir=None) as classifier:
        assert classifier.models()["digits"].backend == "tensorflow"  # no conversion cached yet
        first = await classifier.classify(photo, "digit")
        await classifier.conversions_done()
        assert {m.backend for m in classifier.models().values()} == {"litert"}
        assert {m.swaps for m in classifier.models().values()} == {0}  # the same versions
        after = await classifier.classify(photo, "digit")
    assert (after.label, after.status, after.version) == (first.label, first.status, first.version)
    assert after.confidence == pytest.approx(first.confidence, abs=1e-4)
    switched = [r.getMessage() for r in caplog.records if "now served by LiteRT" in r.getMessage()]
    assert len(switched) == 2
    caplog.clear()
    async with Classifier(new_store, config(), shipped_dir=None) as classifier:
        assert {m.backend for m in classifier.models().values()} == {"litert"}  # at once, from the cache
    assert not [r for r in caplog.records if "now served by LiteRT" in r.getMessage()]


async def test_a_process_pool_prepares_photos_like_the_thread_pool(store, test_digits):
    x_test, _ = test_digits
    photos = [digit_photo(x_test[i], seed=i) for i in range(8)] + [b"\x89PNG\r\n\x1a\n broken"]
    async with Classifier(store, config(pool="thread"), names=("digits",), shipped_dir=None) as classifier:
        threads = await asyncio.gather(
            *(classifier.classify(p, "digit") for p in photos), return_exceptions=True
        )
    async with Classifier(
        store, config(pool="process", workers=2), names=("digits",), shipped_dir=None
    ) as classifier:
        processes = await asyncio.gather(
            *(classifier.classify(p, "digit") for p in photos), return_exceptions=True
        )
    assert isinstance(processes[-1], UnsupportedImage)
    assert [(p.label, p.status) for p in processes[:-1]] == [(p.label, p.status) for p in threads[:-1]]
    for a, b in zip(processes[:-1], threads[:-1], strict=True):
        # the same inputs, but batched with different neighbours: float rounding differs in the 5th digit
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


async def test_pool_processes_run_one_native_thread_each(monkeypatch):
    # A process per core already; BLAS threads on top made the pool fight the model for the cores.
    for name in NATIVE_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    pool = ProcessPool(1)
    await pool.start()
    try:
        there = await pool.run(native_threads)
    finally:
        await pool.close()
    assert there == dict.fromkeys(NATIVE_THREAD_VARIABLES, "1")
    assert native_threads() == dict.fromkeys(NATIVE_THREAD_VARIABLES)  # the bot's own process is untouched


async def test_prepare_photo_gives_identical_inputs_in_a_spawned_process(test_digits):
    x_test, _ = test_digits
    photo = digit_photo(x_test[3], seed=3)
    args = (photo, "digits", {"digits": digits.PREPROCESSING_ID})
    limits = {"max_bytes": 1 << 24, "max_pixels": 1 << 24}
    here = prepare_photo(*args, **limits)
    pool = ProcessPool(1)
    await pool.start()
    try:
        there = await pool.run(prepare_photo, *args, **limits)
    finally:
        await pool.close()
    assert set(there.items) == {"digits"}
    np.testing.assert_array_equal(there.items["digits"][0], here.items["digits"][0])
    assert here.items["digits"][0].shape[1:] == (28, 28, 1)


def _address_space_limit(pid: int) -> int | None:
    """The soft RLIMIT_AS of process `pid` in bytes (None: unlimited), from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    raise AssertionError("no address space line")


async def test_decode_processes_run_under_a_memory_cap_and_still_answer(store, test_digits):
    x_test, y_test = test_digits
    photos = [digit_photo(x_test[i], seed=i) for i in range(6)]
    engine = config(pool="process", workers=2, decode_memory_mb=512)
    async with Classifier(store, engine, names=("digits",), shipped_dir=None) as classifier:
        limits = [_address_space_limit(pid) for pid in classifier._pool.pids]
        answers = await asyncio.gather(*(classifier.classify(p, "digit") for p in photos))
    assert all(limit is not None and limit > 512 << 20 for limit in limits)
    assert _address_space_limit(os.getpid()) is None  # the bot's own process is not capped
    assert [a.label for a in answers] == [str(y) for y in y_test[:6]]
