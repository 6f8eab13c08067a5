"""Versions: promote / rollback / hot swap while photos are being answered, and refusal of bad files."""

from __future__ import annotations

import asyncio
import zipfile

import keras
import numpy as np
import pytest

from inference.classifier import Classifier
from inference.engine import EngineConfig
from inference.errors import ModelUnavailable
from inference.loading import load_version
from inference.model_store import ModelStore
from tests.support.models import add_version, digit_meta, digit_photo, load_mnist_subset


@pytest.fixture(scope="module")
def two_models(tiny_digit_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return (
        tiny_digit_model(folder / "a.keras", hidden=64, seed=0),
        tiny_digit_model(folder / "b.keras", hidden=32, seed=1),
    )


@pytest.fixture(scope="module")
def two_converted_models(tiny_digit_model, tmp_path_factory):
    """`two_models` with their LiteRT conversions beside them, as after each version's first start: for
    the tests that convert nothing themselves (without them, every version a test loads would start
    a conversion process that imports TensorFlow)."""
    folder = tmp_path_factory.mktemp("converted-models")
    return (
        tiny_digit_model(folder / "a.keras", hidden=64, seed=0, converted=True),
        tiny_digit_model(folder / "b.keras", hidden=32, seed=1, converted=True),
    )


@pytest.fixture(scope="module")
def photos(mnist_path):
    _, _, x_test, y_test = load_mnist_subset(mnist_path, n_test=24)
    return [digit_photo(x, seed=i) for i, x in enumerate(x_test)], y_test


def config(**changes) -> EngineConfig:
    """One decode process: a test's few photos need no more."""
    return EngineConfig(**{"reload_poll_s": 0, "max_wait_ms": 5.0, "workers": 1, **changes})


async def test_hot_swaps_under_concurrent_calls_fail_no_request(tmp_path, two_models, photos):
    store = ModelStore(tmp_path / "models")
    first = add_version(store, "digits", two_models[0], digit_meta())
    second = add_version(store, "digits", two_models[1], digit_meta(), promote=False)
    store.promote("digits", first.version)
    images, labels = photos
    answers, errors = [], []
    stop = asyncio.Event()

    async def caller(index: int) -> None:
        i = index
        while not stop.is_set():
            try:
                prediction = await classifier.classify(images[i % len(images)], "digit")
                answers.append((prediction.version, prediction.label, str(labels[i % len(images)])))
            except Exception as error:  # any failure is what this test is about
                errors.append(error)
            i += 7

    async with Classifier(store, config(), names=("digits",), shipped_dir=None) as classifier:
        callers = [asyncio.create_task(caller(n)) for n in range(16)]
        swaps = []
        for target in (second, first, second):
            await asyncio.sleep(0.3)
            store.promote("digits", target.version)
            swaps.append((await classifier.reload("digits")).version)
            assert classifier.models()["digits"].version == target.version
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*callers)
        after = await classifier.classify(images[0], "digit")
        swapped = classifier.models()["digits"].swaps

    assert errors == []
    assert swaps == [2, 1, 2]
    assert swapped == 3
    assert after.version == 2
    assert {version for version, _, _ in answers} == {1, 2}
    assert len(answers) > 50
    assert np.mean([label == truth for _, label, truth in answers]) >= 0.75


async def test_rollback_returns_to_the_earlier_version(tmp_path, two_converted_models, photos):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", two_converted_models[0], digit_meta())
    add_version(store, "digits", two_converted_models[1], digit_meta())
    images, _ = photos
    async with Classifier(store, config(), names=("digits",), shipped_dir=None) as classifier:
        assert (await classifier.classify(images[0], "digit")).version == 2
        store.rollback("digits")
        await classifier.reload("digits")
        assert (await classifier.classify(images[0], "digit")).version == 1
        assert store.active_version("digits") == 1


async def test_a_promotion_by_another_process_is_picked_up_by_polling(tmp_path, two_converted_models, photos):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", two_converted_models[0], digit_meta())
    second = add_version(store, "digits", two_converted_models[1], digit_meta(), promote=False)
    images, _ = photos
    async with Classifier(
        store, config(reload_poll_s=0.05), names=("digits",), shipped_dir=None
    ) as classifier:
        ModelStore(store.root).promote("digits", second.version)  # as `photobot models promote` would
        for _ in range(200):
            if classifier.models()["digits"].version == second.version:
                break
            await asyncio.sleep(0.05)
        assert (await classifier.classify(images[0], "digit")).version == second.version


def corrupt_files(folder, good_model):
    """Model files that must be refused: random bytes, a truncated archive, a zip that is not Keras."""
    garbage = folder / "garbage.keras"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    truncated = folder / "truncated.keras"
    truncated.write_bytes(good_model.read_bytes()[:2000])
    not_keras = folder / "not_keras.keras"
    with zipfile.ZipFile(not_keras, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", b"\x00" * 64)
    return {"garbage": garbage, "truncated": truncated, "not_keras": not_keras}


@pytest.mark.parametrize("kind", ["garbage", "truncated", "not_keras", "missing"])
async def test_a_corrupt_or_missing_model_file_is_refused_and_the_old_version_keeps_serving(
    tmp_path, two_models, photos, kind
):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", two_models[0], digit_meta())
    files = corrupt_files(tmp_path, two_models[0])
    broken = add_version(store, "digits", files.get(kind, two_models[0]), digit_meta(), promote=False)
    if kind == "missing":
        broken.model_file.unlink()
    images, _ = photos
    async with Classifier(store, config(), names=("digits",), shipped_dir=None) as classifier:
        store.promote("digits", broken.version)
        with pytest.raises(ModelUnavailable, match="v2"):
            await classifier.reload("digits")
        prediction = await classifier.classify(images[0], "digit")
        status = classifier.models()["digits"]
    assert prediction.version == 1
    assert status.version == 1
    assert 2 in status.refused


async def test_a_model_with_python_code_is_refused_by_safe_mode(tmp_path, photos):
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Lambda(lambda x: x[:, :10] * 2.0)]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    store = ModelStore(tmp_path / "models")
    version = add_version(store, "digits", path, digit_meta())
    with pytest.raises(ModelUnavailable, match=r"cannot be loaded.*safe_mode"):
        load_version(version, max_batch=4, padded_sizes=())


async def test_a_model_that_loads_but_does_not_fit_the_input_is_refused(tmp_path, two_models):
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "wrong.keras"
    model.save(path)
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", two_models[0], digit_meta())
    add_version(store, "digits", path, digit_meta())
    async with Classifier(store, config(), names=("digits",), shipped_dir=None) as classifier:
        # v2 is active at start: refused, so nothing serves until a good version is promoted
        assert classifier.models()["digits"].version is None
        store.promote("digits", 1)
        await classifier.reload("digits")
        assert classifier.models()["digits"].version == 1


async def test_decode_processes_run_the_version_that_answers(tmp_path, two_converted_models, photos):
    """With LiteRT the digit model runs in the decode processes (IN_DECODE_WORKERS), not in its engine;
    a swap hands them the new version's conversion, and the answers are the engine's."""
    store = ModelStore(tmp_path / "models")
    first = add_version(store, "digits", two_converted_models[0], digit_meta())
    second = add_version(store, "digits", two_converted_models[1], digit_meta(), promote=False)
    images = photos[0][:6]

    async def answers(classifier: Classifier) -> list[tuple[int, str, float]]:
        found = await asyncio.gather(*(classifier.classify(p, "digit") for p in images))
        return [(a.version, a.label, a.confidence) for a in found]

    seen = []
    async with Classifier(store, config(runtime="lite"), names=("digits",), shipped_dir=None) as classifier:
        for target in (first, second, first):
            store.promote("digits", target.version)
            await classifier.reload("digits")
            seen.append(await answers(classifier))
        status = classifier.models()["digits"]
    assert status.in_workers == 3 * len(images)
    assert status.batches["batches"] == 0  # the engine ran nothing
    assert {v for v, _, _ in seen[0]} == {1} and {v for v, _, _ in seen[1]} == {2}
    assert seen[2] == seen[0]  # v1's answers again after the swap back
    assert [c for _, _, c in seen[1]] != pytest.approx([c for _, _, c in seen[0]], abs=1e-3)  # v2 ran

    # Pool threads share one process: the engine runs the model, with the same answers.
    async with Classifier(
        store, config(runtime="lite", pool="thread"), names=("digits",), shipped_dir=None
    ) as classifier:
        engine = await answers(classifier)  # v1 is active again
        assert classifier.models()["digits"].in_workers == 0
    assert [(v, label) for v, label, _ in engine] == [(v, label) for v, label, _ in seen[0]]
    assert [c for _, _, c in engine] == pytest.approx([c for _, _, c in seen[0]], abs=1e-5)


async def test_a_conversion_file_gone_from_disk_leaves_the_model_to_its_engine(
    tmp_path, two_converted_models, photos
):
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", two_converted_models[0], digit_meta())
    images = photos[0][:4]
    async with Classifier(store, config(runtime="lite"), names=("digits",), shipped_dir=None) as classifier:
        (converted,) = store.root.rglob("model-*.tflite")
        converted.unlink()  # before any decode process opened it
        answers = await asyncio.gather(*(classifier.classify(p, "digit") for p in images))
        status = classifier.models()["digits"]
    assert status.in_workers == 0
    assert status.batches["requests"] == len(images)  # the engine answered every photo
    assert {a.version for a in answers} == {1} and all(a.label for a in answers)
