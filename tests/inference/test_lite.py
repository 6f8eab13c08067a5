"""LiteRT serving: the same outputs as Keras, in Keras' order, converted once per model file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.lite import (
    LiteUnavailable,
    conversion_file,
    has_conversion,
    hash_file,
    run_in_this_process,
    serve_with_lite,
    wants_lite,
)


def two_output_model(path, seed: int):
    """Two outputs of the same width, so that swapping them would go unnoticed by shape alone."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="values")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    first = keras.layers.Dense(4, activation="softmax", name="first")(hidden)
    second = keras.layers.Dense(4, name="second")(hidden)
    model = keras.Model(inputs, [first, second])
    model.save(path)
    return keras.saving.load_model(path, compile=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, int], Any]:
    """`converted(path, seed)`: `two_output_model`'s file copied to `path` with its cached conversion
    and SHA-256 beside it, as a first `serve_with_lite` leaves them, and the model loaded from it. Each
    seed is built and converted once per module: the tests that start from a cached conversion (to
    damage or replace it) need not convert it again."""
    import keras

    folder = tmp_path_factory.mktemp("converted")
    made: dict[int, Path] = {}

    def copy_to(path: Path, seed: int) -> Any:
        if seed not in made:
            source = folder / f"seed-{seed}" / "model.keras"
            source.parent.mkdir()
            serve_with_lite(two_output_model(source, seed=seed), source, threads=1)
            made[seed] = source
        cached = conversion_file(made[seed])
        for file in (made[seed], cached, hash_file(cached)):
            shutil.copy2(file, path.with_name(file.name))
        return keras.saving.load_model(path, compile=False)

    return copy_to


def test_outputs_match_keras_in_order_at_every_batch_size(tmp_path):
    path = tmp_path / "model.keras"
    model = two_output_model(path, seed=1)
    lite = serve_with_lite(model, path, threads=1)
    rng = np.random.default_rng(7)
    for rows in (1, 5, 2, 1):
        batch = rng.normal(size=(rows, 6)).astype(np.float32)
        expected, got = model.predict_on_batch(batch), lite.predict_on_batch(batch)
        assert len(got) == 2
        for want, have in zip(expected, got, strict=True):
            assert have.shape == (rows, 4)
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


def test_the_conversion_is_cached_under_the_model_files_digest(tmp_path):
    path = tmp_path / "model.keras"
    serve_with_lite(two_output_model(path, seed=1), path, threads=1)
    (first,) = tmp_path.glob("model-*.tflite")
    converted = first.read_bytes()
    serve_with_lite(two_output_model(path, seed=2), path, threads=1)  # new weights, same file name
    (second,) = set(tmp_path.glob("model-*.tflite")) - {first}
    assert second.read_bytes() != converted
    assert first.read_bytes() == converted


@pytest.mark.parametrize("damage", ["garbage", "another model"])
def test_a_damaged_or_foreign_cached_conversion_is_replaced(tmp_path, damage, converted):
    other = tmp_path / "other" / "model.keras"
    other.parent.mkdir()
    serve_with_lite(converted(other, 2), other, threads=1)
    path = tmp_path / "model.keras"
    model = converted(path, 1)
    serve_with_lite(model, path, threads=1)
    (cached,) = tmp_path.glob("model-*.tflite")
    good = cached.read_bytes()
    (foreign,) = other.parent.glob("model-*.tflite")
    cached.write_bytes(b"TFL3 but not a model" if damage == "garbage" else foreign.read_bytes())
    lite = serve_with_lite(model, path, threads=1)
    batch = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    for want, have in zip(model.predict_on_batch(batch), lite.predict_on_batch(batch), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
    assert cached.read_bytes() == good


@pytest.mark.parametrize(
    ("runtime", "backend", "device", "expected"),
    [
        ("auto", "tensorflow", "cpu:0", True),
        ("auto", "tensorflow", "gpu:0", False),
        ("auto", "jax", "cpu:0", False),
        ("keras", "tensorflow", "cpu:0", False),
        ("lite", "jax", "cuda:0", True),
    ],
)
def test_which_runtime_serves(runtime, backend, device, expected):
    assert wants_lite(runtime, backend, device) is expected


def test_an_unknown_runtime_is_an_error():
    with pytest.raises(ValueError, match="runtime must be one of"):
        wants_lite("onnx", "tensorflow", "cpu:0")


def test_another_process_runs_the_cached_conversion_with_its_own_interpreters(
    tmp_path, monkeypatch, converted
):
    """What a decode process does with `LiteModel.file`: the same outputs, one interpreter per file,
    the last few kept."""
    import inference.lite as lite_module

    monkeypatch.setattr(lite_module, "_IN_THIS_PROCESS", type(lite_module._IN_THIS_PROCESS)())
    files = []
    for seed in (1, 2):
        path = tmp_path / str(seed) / "model.keras"
        path.parent.mkdir()
        model = converted(path, seed)
        lite = serve_with_lite(model, path, threads=1)
        assert lite.file is not None and lite.file.parent == path.parent and lite.file.is_file()
        files.append((str(lite.file), model))
    batch = np.random.default_rng(3).normal(size=(3, 6)).astype(np.float32)
    for file, model in files * 2:
        for want, have in zip(
            model.predict_on_batch(batch), run_in_this_process(file, 2, batch), strict=True
        ):
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
    assert list(lite_module._IN_THIS_PROCESS) == [f for f, _ in files]  # one each, reused
    run_in_this_process(files[0][0], 2, batch)
    assert list(lite_module._IN_THIS_PROCESS) == [files[1][0], files[0][0]]  # most recently used last
    monkeypatch.setattr(lite_module, "IN_THIS_PROCESS_KEPT", 1)
    lite_module._IN_THIS_PROCESS.popitem()
    run_in_this_process(files[0][0], 2, batch)
    assert list(lite_module._IN_THIS_PROCESS) == [files[0][0]]  # a new one pushed the oldest out
    with pytest.raises(FileNotFoundError):
        run_in_this_process(str(tmp_path / "gone.tflite"), 2, batch)


def test_a_conversion_that_cannot_be_cached_serves_without_a_file(tmp_path):
    path = tmp_path / "model.keras"
    model = two_output_model(path, seed=1)
    # The cache cannot be written (a folder where its hash goes; as root, modes would not stop it).
    hash_file(conversion_file(path)).mkdir()
    lite = serve_with_lite(model, path, threads=1)
    assert lite.file is None and not conversion_file(path).exists()


def test_a_stale_temporary_file_does_not_stop_the_cache(tmp_path):
    """The temporary name is unique: a leftover at the old fixed name (`.tmp`) no longer blocks it."""
    path = tmp_path / "model.keras"
    model = two_output_model(path, seed=1)
    conversion_file(path).with_suffix(".tmp").mkdir()
    lite = serve_with_lite(model, path, threads=1)
    assert lite.file == conversion_file(path) and has_conversion(path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_the_conversion_is_cached_with_its_sha256_beside_it(tmp_path):
    import hashlib

    path = tmp_path / "model.keras"
    lite = serve_with_lite(two_output_model(path, seed=1), path, threads=1)
    recorded = hash_file(lite.file).read_text().strip()
    assert recorded == hashlib.sha256(lite.file.read_bytes()).hexdigest()


@pytest.mark.parametrize("tamper", ["another model", "one byte", "no hash"])
def test_a_tampered_cached_conversion_is_not_loaded_by_another_process(
    tmp_path, monkeypatch, tamper, converted
):
    """A decode process loads the conversion by path, with no Keras model to compare: the recorded
    SHA-256 is what stops a replaced or damaged file (before, it ran whatever the file held)."""
    import inference.lite as lite_module

    monkeypatch.setattr(lite_module, "_IN_THIS_PROCESS", type(lite_module._IN_THIS_PROCESS)())
    other = tmp_path / "other" / "model.keras"
    other.parent.mkdir()
    foreign = serve_with_lite(converted(other, 2), other, threads=1).file
    path = tmp_path / "model.keras"
    model = converted(path, 1)
    cached = serve_with_lite(model, path, threads=1).file
    if tamper == "another model":
        cached.write_bytes(foreign.read_bytes())
    elif tamper == "one byte":
        data = bytearray(cached.read_bytes())
        data[len(data) // 2] ^= 0x01
        cached.write_bytes(bytes(data))
    else:
        hash_file(cached).unlink()
    batch = np.random.default_rng(3).normal(size=(2, 6)).astype(np.float32)
    with pytest.raises(LiteUnavailable, match="SHA-256"):
        run_in_this_process(str(cached), 2, batch)
    assert not lite_module._IN_THIS_PROCESS
    # The serving process drops it and converts again: the cache holds a good, recorded conversion.
    lite = serve_with_lite(model, path, threads=1)
    again = run_in_this_process(str(lite.file), 2, batch)
    for want, have in zip(model.predict_on_batch(batch), again, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
