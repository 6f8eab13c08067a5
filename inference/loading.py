"""Loading a model version safely, and running it as one compiled call per batch.

Only files this project wrote are loaded: `model.keras` inside a real version directory of the model
store (neither the directory nor the file a symlink, nothing resolving outside the store), a Keras zip
archive with the SHA-256 that meta.json recorded when the version was published (`ModelStore` writes
it; a version published before hashes were recorded loads with a warning). Keras loads it with
`safe_mode=True`, which refuses serialized Python code (lambdas). Any failure, in loading or in the
warm-up call, becomes one ModelUnavailable that says which file and why; the caller keeps the version
it was serving.

The call: `predict_on_batch` is Keras' compiled step (a `tf.function` on TensorFlow, `jax.jit` on JAX)
without the data pipeline that `predict` builds on every call (~50 ms). On TensorFlow without XLA one
graph with a dynamic batch dimension serves every batch size; where the backend compiles per shape
(JAX, or XLA) batches are padded to a few fixed sizes so the compiled graphs are reused. (XLA on this
CPU made a MobileNet-sized network ~6× slower than TensorFlow's oneDNN kernels, so it stays off.)
On the CPU the default runtime goes one step further and serves the converted model through LiteRT
(`inference.lite`), which takes half the flower model's time and a quarter of the digit CNN's. A version
whose conversion is cached (checked against Keras when it was written, hash-checked when read) is
served without importing Keras at all, which alone takes ~4 s: `photobot classify` answers in ~2 s.
"""

from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.engine import Outputs, slice_outputs
from inference.errors import ModelUnavailable
from inference.lite import LiteModel, LiteUnavailable, keras_free, load_cached, serve_with_lite, wants_lite
from inference.model_store import ModelVersion, check_inside, sha256_file

log = logging.getLogger(__name__)

KERAS_ARCHIVE_MEMBERS = ("config.json", "model.weights.h5")
LITE_DEVICE = "cpu:0"  # as Keras names the CPU it would have placed the model on


@dataclass(eq=False)
class LoadedModel:
    """A model version in memory, warmed up, with the batch shapes it runs at."""

    version: ModelVersion
    model: Any  # keras.Model, or inference.lite.LiteModel
    row_shape: tuple[int, ...]  # the input of one row, without the batch axis
    dtype: str
    padded_sizes: tuple[int, ...]  # () when any batch size reuses the same compiled graph
    backend: str
    device: str
    load_ms: float = 0.0

    @property
    def name(self) -> str:
        return self.version.name

    def run(self, batch: np.ndarray) -> Outputs:
        """One compiled call per chunk of at most the largest padded size (one chunk in practice)."""
        batch = np.asarray(batch, dtype=self.dtype)
        if batch.shape[1:] != self.row_shape:
            raise ValueError(f"{self.name}: input rows of shape {batch.shape[1:]}, expected {self.row_shape}")
        if not self.padded_sizes:
            return self.model.predict_on_batch(batch)
        largest = self.padded_sizes[-1]
        if len(batch) <= largest:
            return self._run_padded(batch)
        parts = [self._run_padded(batch[i : i + largest]) for i in range(0, len(batch), largest)]
        return _concat_outputs(parts)

    def _run_padded(self, batch: np.ndarray) -> Outputs:
        rows = len(batch)
        size = next(s for s in self.padded_sizes if s >= rows)
        if size > rows:
            batch = np.concatenate([batch, np.zeros((size - rows, *self.row_shape), dtype=batch.dtype)])
        return slice_outputs(self.model.predict_on_batch(batch), 0, rows)

    def warm_up(self, max_batch: int) -> None:
        """Compile before the first user pays for it: every padded size, or 1, 2 and max_batch.

        With TensorFlow's `reduce_retracing` the second batch size already yields a graph with a
        dynamic batch axis, so later sizes reuse it. Outputs are checked, so a model that loads but
        cannot run (wrong input shape, NaNs) is refused here, before it serves anyone.
        """
        sizes = self.padded_sizes or tuple(sorted({1, 2, max(1, max_batch)}))
        for size in sizes:
            outputs = self.run(np.zeros((size, *self.row_shape), dtype=self.dtype))
            _check_outputs(self.name, outputs, size)


def load_version(
    version: ModelVersion, *, max_batch: int, padded_sizes: tuple[int, ...], runtime: str = "auto"
) -> LoadedModel:
    """Load, check and warm one version; raises ModelUnavailable with the reason.

    `runtime` (see `inference.lite`): "auto" serves TensorFlow models on the CPU through LiteRT when
    the conversion checks out, "keras" always through Keras, "lite" through LiteRT or not at all.
    """
    started = time.monotonic()
    label = f"{version.name} v{version.version}"
    path = _checked_model_file(version)
    lite = load_cached(path) if keras_free(runtime) else None
    if lite is not None:
        return _warmed(_lite_loaded(version, lite), max_batch, started)
    import keras  # heavy; imported when a model is first loaded, not when the package is

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise ModelUnavailable(
            f"{label}: {path} cannot be loaded ({type(error).__name__}: {error})"
        ) from error
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or any(d is None for d in tuple(inputs[0].shape)[1:]):
        raise ModelUnavailable(f"{label}: the model must take one input of fixed shape per row")
    backend, device = keras.backend.backend(), _device(keras)
    compiles_per_shape = _compiles_per_shape(model, backend)
    if wants_lite(runtime, backend, device):
        try:
            model, backend, compiles_per_shape = serve_with_lite(model, path), "litert", False
        except LiteUnavailable as error:
            if runtime == "lite":
                raise ModelUnavailable(f"{label}: LiteRT cannot serve it ({error})") from error
            log.warning("%s: served by Keras, LiteRT cannot serve it (%s)", label, error)
    loaded = LoadedModel(
        version=version,
        model=model,
        row_shape=tuple(int(d) for d in tuple(inputs[0].shape)[1:]),
        dtype=str(inputs[0].dtype),
        padded_sizes=padded_sizes if compiles_per_shape else (),
        backend=backend,
        device=device,
    )
    return _warmed(loaded, max_batch, started)


def load_conversion(version: ModelVersion, *, max_batch: int) -> LoadedModel:
    """The version's cached LiteRT conversion, loaded and warmed without Keras; never converts (see
    `inference.converting`). Raises ModelUnavailable when no cached conversion checks out."""
    started = time.monotonic()
    lite = load_cached(_checked_model_file(version))
    if lite is None:
        raise ModelUnavailable(f"{version.name} v{version.version}: no cached LiteRT conversion to serve")
    return _warmed(_lite_loaded(version, lite), max_batch, started)


def _lite_loaded(version: ModelVersion, lite: LiteModel) -> LoadedModel:
    """A cached conversion as a LoadedModel, described by its own signature (no Keras model at hand)."""
    return LoadedModel(
        version=version,
        model=lite,
        row_shape=lite.row_shape,
        dtype=lite.dtype,
        padded_sizes=(),
        backend="litert",
        device=LITE_DEVICE,
    )


def _warmed(loaded: LoadedModel, max_batch: int, started: float) -> LoadedModel:
    """`loaded`, warmed up and timed; a failed warm-up is a ModelUnavailable that says why."""
    try:
        loaded.warm_up(max_batch)
    except ModelUnavailable:
        raise
    except Exception as error:
        raise ModelUnavailable(
            f"{loaded.name} v{loaded.version.version}: the warm-up call failed "
            f"({type(error).__name__}: {error})"
        ) from error
    loaded.load_ms = (time.monotonic() - started) * 1000.0
    return loaded


def _checked_model_file(version: ModelVersion) -> Path:
    label = f"{version.name} v{version.version}"
    path = version.model_file
    check_inside(version.path.parent.parent, version.path, label)
    if not path.is_file():
        raise ModelUnavailable(f"{label}: {path} is missing")
    if path.is_symlink() or not path.resolve().is_relative_to(version.path.resolve()):
        raise ModelUnavailable(f"{label}: {path} points outside its version directory")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelUnavailable(f"{label}: {path} is not a Keras model archive ({error})") from error
    missing = [m for m in KERAS_ARCHIVE_MEMBERS if m not in names]
    if missing:
        raise ModelUnavailable(f"{label}: {path} is not a Keras model archive (no {', '.join(missing)})")
    _check_recorded_hash(version, path, label)
    return path


def _check_recorded_hash(version: ModelVersion, path: Path, label: str) -> None:
    """Refuse a model file that changed since its version was published (meta.json's "sha256")."""
    recorded = version.meta.get("sha256")
    expected = recorded.get(path.name) if isinstance(recorded, dict) else None
    if not expected:
        log.warning("%s: meta.json records no SHA-256 of %s; loading it unchecked", label, path.name)
        return
    if sha256_file(path) != expected:
        raise ModelUnavailable(
            f"{label}: {path} has changed since it was published (its SHA-256 is not the one in meta.json)"
        )


def _compiles_per_shape(model: Any, backend: str) -> bool:
    """JAX jits per input shape; TensorFlow only with XLA (`jit_compile`); torch runs eagerly here."""
    if backend == "jax":
        return True
    return backend == "tensorflow" and bool(getattr(model, "jit_compile", False))


def _device(keras: Any) -> str:
    """The device the backend places this model on: its first accelerator, else the CPU."""
    try:
        devices = [str(d) for d in keras.distribution.list_devices()]
    except Exception:  # not every backend implements it
        return "cpu"
    accelerators = [d for d in devices if not d.lower().startswith("cpu")]
    return (accelerators or devices or ["cpu"])[0]


def _check_outputs(name: str, outputs: Outputs, rows: int) -> None:
    arrays = _leaves(outputs)
    if not arrays:
        raise ModelUnavailable(f"{name}: the model returned nothing")
    for array in arrays:
        array = np.asarray(array)
        if array.shape[:1] != (rows,):
            raise ModelUnavailable(f"{name}: {rows} rows in, output of shape {array.shape} out")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ModelUnavailable(f"{name}: the model returns NaN or infinite values")


def _leaves(outputs: Outputs) -> list[Any]:
    if isinstance(outputs, dict):
        return [leaf for value in outputs.values() for leaf in _leaves(value)]
    if isinstance(outputs, list | tuple):
        return [leaf for value in outputs for leaf in _leaves(value)]
    return [outputs]


def _concat_outputs(parts: list[Outputs]) -> Outputs:
    first = parts[0]
    if isinstance(first, dict):
        return {key: _concat_outputs([p[key] for p in parts]) for key in first}
    if isinstance(first, list | tuple):
        return type(first)(_concat_outputs([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate([np.asarray(p) for p in parts])
