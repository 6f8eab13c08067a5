"""Serving a Keras model on the CPU through LiteRT (TensorFlow Lite) with its XNNPACK kernels.

On a CPU, TensorFlow's runtime costs more than the small models it runs: the digit CNN takes 1.2 ms
a call in `predict_on_batch` and 0.3 ms in LiteRT; the flower model 30 ms and 15 ms a photo (one
thread each, `photobot bench inference`, README). So where the backend is TensorFlow and the model
sits on the CPU, a loaded version is converted once (TensorFlow's converter, from the SavedModel
Keras exports) and served by LiteRT's interpreter; on a GPU, or when anything below fails, Keras
serves it as before.

A conversion is checked before it serves: the same probe batch through Keras and through LiteRT must
give the same outputs (to float rounding), else Keras keeps the model. Converted models are cached
beside `model.keras` as `model-<digest>.tflite`, named by the SHA-256 of the Keras file they came
from, so a restart does not convert again (the flower model takes ~11 s) and a changed model.keras
never meets a stale conversion. Until a version has its conversion, the Classifier serves it with Keras
and converts it in the background (`has_conversion`).

A cached conversion is only loaded when its bytes have the SHA-256 recorded beside it when it was
written (`model-<digest>.tflite.sha256`): the decode processes load it by path, without the Keras
comparison, and a damaged or replaced flatbuffer is handed to LiteRT's C++ parser otherwise. It is
written under a unique temporary name, fsynced, then renamed into place, so two processes converting
the same version at once, or a crash mid-write, never leave a half file under the final name.

Serving a cached conversion needs neither Keras nor TensorFlow (`load_cached`): importing Keras alone
takes ~4 s on a 2-core machine, more than the whole answer. The check against Keras is made once, when
the conversion is written (a conversion is cached only after it passed it), and the hash recorded
then vouches for the bytes later. Where Keras would not choose LiteRT (another backend, a GPU it might
use), the loader goes through Keras as before.

LiteRT announces its XNNPACK delegate on stderr ("INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.") whatever TF_CPP_MIN_LOG_LEVEL says; when that variable asks for no INFO lines, the line is
filtered out of the first call of each interpreter.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "keras", "lite")
PROBE_ROWS = 3  # rows of the equivalence check: a batch, not one photo


class LiteUnavailable(Exception):
    """The model cannot be served by LiteRT here; the message says why (Keras serves it instead)."""


def lite_installed() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def wants_lite(runtime: str, backend: str, device: str) -> bool:
    """`auto`: LiteRT for TensorFlow models on the CPU when it is installed; `lite` insists on it."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "keras":
        return False
    if runtime == "lite":
        return True
    return backend == "tensorflow" and device.lower().startswith("cpu") and lite_installed()


class LiteModel:
    """A converted model with Keras' calling convention: `predict_on_batch(batch)` → outputs.

    One interpreter, called by one thread at a time (the engine's worker for this model): LiteRT
    interpreters are not thread-safe. A batch of a new size resizes the input (~0.3 ms).
    """

    def __init__(self, flatbuffer: bytes, *, threads: int, outputs: int | None = None) -> None:
        """`outputs`: how many the Keras model has (checked); None takes the signature's word for it."""
        from ai_edge_litert.interpreter import Interpreter

        self.file: Path | None = None  # where this conversion is cached, once it is

        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            raise LiteUnavailable(f"expected one signature, found {sorted(signatures)}")
        ((key, signature),) = signatures.items()
        self.outputs = len(signature["outputs"]) if outputs is None else outputs
        if len(signature["inputs"]) != 1 or len(signature["outputs"]) != self.outputs:
            raise LiteUnavailable(f"signature {signature} does not match the Keras model")
        self._runner = self._interpreter.get_signature_runner(key)
        self._input = signature["inputs"][0]
        # Keras' export names outputs output_0, output_1, … in the model's order.
        self._outputs = sorted(signature["outputs"], key=lambda name: int(name.rsplit("_", 1)[-1]))
        self._called = False

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The input of one row, without the batch axis (as the Keras model's `inputs[0].shape[1:]`)."""
        details = self._runner.get_input_details()[self._input]
        return tuple(int(d) for d in details["shape_signature"][1:])

    @property
    def dtype(self) -> str:
        dtype: np.dtype[Any] = np.dtype(self._runner.get_input_details()[self._input]["dtype"])
        return dtype.name

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray | list[np.ndarray]:
        if self._called:
            results = self._runner(**{self._input: batch})
        else:  # the first call applies the XNNPACK delegate, which says so on stderr
            with _without_delegate_notice():
                results = self._runner(**{self._input: batch})
            self._called = True
        # Copies: the interpreter reuses its buffers on the next call.
        arrays = [np.array(results[name]) for name in self._outputs]
        return arrays[0] if len(arrays) == 1 else arrays


DELEGATE_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
_STDERR_LOCK = threading.RLock()
# absl's C++ log lines ("I0000 00:00:1796… 12679 port.cc:153] …") and its notice before they start:
# what TensorFlow's libraries write while they load, before TF_CPP_MIN_LOG_LEVEL is read.
TF_LOAD_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions:)"
)


def quiet_wanted() -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL asks TensorFlow for no INFO lines (the command line sets it)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0")


def _without_delegate_notice() -> contextlib.AbstractContextManager[None]:
    """Leave LiteRT's delegate notice out of stderr when TF_CPP_MIN_LOG_LEVEL hides INFO lines."""
    if not quiet_wanted():
        return contextlib.nullcontext()
    return filtered_stderr(lambda line: line == DELEGATE_NOTICE)


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[bytes], object]) -> Iterator[None]:
    """Lines written to file descriptor 2 meanwhile are passed on afterwards, but for those `drop` names.

    For C++ libraries that log straight to that descriptor whatever their settings say: it points at a
    temporary file for the duration; whatever else was written meanwhile (another thread's log line)
    is passed on when it ends, in order.
    """
    with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured.read().splitlines(keepends=True) if not drop(line))
            if kept:
                os.write(2, kept)


def keras_free(runtime: str) -> bool:
    """Whether a cached conversion may serve without asking Keras: what `wants_lite` would answer for
    this runtime, known without importing Keras (which takes seconds). Where a GPU might serve, only
    Keras can tell: False."""
    if runtime == "lite":
        return lite_installed()
    if runtime != "auto" or configured_backend() != "tensorflow":
        return False
    return not gpu_possible() and lite_installed()


def configured_backend() -> str:
    """Keras' backend as Keras reads it: KERAS_BACKEND, else keras.json in KERAS_HOME (~/.keras)."""
    chosen = os.environ.get("KERAS_BACKEND", "").strip()
    if chosen:
        return chosen
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as file:
            backend = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"
    return backend if isinstance(backend, str) and backend else "tensorflow"


def gpu_possible() -> bool:
    """Whether TensorFlow might find a GPU here: no CUDA, ROCm or WSL device node means it cannot."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    dev = Path("/dev")
    return any((dev / name).exists() for name in ("nvidiactl", "nvidia0", "kfd", "dxg"))


def load_cached(keras_file: Path, *, threads: int | None = None) -> LiteModel | None:
    """The cached conversion of this exact `keras_file`, loaded without Keras; None when there is none
    or it does not match its recorded SHA-256 (Keras then loads the model and converts again)."""
    try:
        cached = conversion_file(keras_file)
        if not cached.is_file():
            return None
        lite = LiteModel(read_verified(cached), threads=threads or intra_op_threads())
    except Exception as error:  # a missing hash, a damaged file: the Keras path deals with it
        log.info("%s: not served from its cached conversion (%s)", keras_file, error)
        return None
    lite.file = cached
    return lite


def serve_with_lite(model: Any, keras_file: Path, *, threads: int | None = None) -> LiteModel:
    """The Keras `model` (loaded from `keras_file`) as a checked LiteModel; raises LiteUnavailable."""
    if not lite_installed():
        raise LiteUnavailable("ai-edge-litert is not installed")
    threads = threads or intra_op_threads()
    cached = conversion_file(keras_file)
    try:
        lite = _from_cache(model, cached, threads)
        if lite is None:
            flatbuffer = convert(model)
            lite = _checked(model, flatbuffer, threads)
            if not _cache(cached, flatbuffer):
                return lite
        lite.file = cached
    except LiteUnavailable:
        raise
    except Exception as error:  # the converter and the interpreter raise many kinds
        raise LiteUnavailable(f"{type(error).__name__}: {error}") from error
    return lite


def has_conversion(keras_file: Path) -> bool:
    """Whether a conversion of this exact file is cached with its hash (a missing file has none)."""
    try:
        cached = conversion_file(keras_file)
        return cached.is_file() and hash_file(cached).is_file()
    except OSError:
        return False


def intra_op_threads() -> int:
    """Threads per model call: TF_NUM_INTRAOP_THREADS (the bot sets 1, see `photobot.serving`), else
    one per core."""
    value = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return os.cpu_count() or 1


def _from_cache(model: Any, cached: Path, threads: int) -> LiteModel | None:
    """The cached conversion, checked; None when there is none, or it is damaged (then it is dropped)."""
    if not cached.is_file():
        return None
    try:
        return _checked(model, read_verified(cached), threads)
    except Exception as error:  # whatever the interpreter makes of a damaged file
        log.warning("dropping the cached conversion %s: %s", cached, error)
        for path in (cached, hash_file(cached)):
            with contextlib.suppress(OSError):
                path.unlink()
        return None


def hash_file(cached: Path) -> Path:
    """Where the SHA-256 of a cached conversion is recorded."""
    return cached.with_name(cached.name + ".sha256")


def read_verified(cached: Path) -> bytes:
    """The bytes of a cached conversion, if they have the SHA-256 recorded when it was written.

    Raises LiteUnavailable when the record is missing or differs, FileNotFoundError when the file is gone.
    """
    data = cached.read_bytes()
    try:
        recorded = hash_file(cached).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise LiteUnavailable(f"{cached.name} has no readable SHA-256 beside it ({error})") from error
    if hashlib.sha256(data).hexdigest() != recorded:
        raise LiteUnavailable(f"{cached.name} does not match the SHA-256 recorded when it was converted")
    return data


def _checked(model: Any, flatbuffer: bytes, threads: int) -> LiteModel:
    lite = LiteModel(flatbuffer, threads=threads, outputs=len(model.outputs))
    _check_same_outputs(model, lite)
    return lite


def conversion_file(keras_file: Path) -> Path:
    """Where the conversion of this exact file is cached (named by its SHA-256: reads the whole file)."""
    digest = hashlib.sha256(keras_file.read_bytes()).hexdigest()[:16]
    return keras_file.with_name(f"model-{digest}.tflite")


def _cache(path: Path, flatbuffer: bytes) -> bool:
    """Best effort: a read-only store converts again at the next start.

    The SHA-256 goes in first, then the flatbuffer: a reader that finds the flatbuffer finds its hash.
    """
    try:
        _write_atomically(hash_file(path), hashlib.sha256(flatbuffer).hexdigest().encode("ascii") + b"\n")
        _write_atomically(path, flatbuffer)
    except OSError as error:
        log.warning("could not cache the LiteRT conversion at %s: %s", path, error)
        return False
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    """Write under a unique temporary name in the same folder, fsync, rename over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename's own durability; not every filesystem allows it
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


_IN_THIS_PROCESS: collections.OrderedDict[str, LiteModel] = collections.OrderedDict()
IN_THIS_PROCESS_KEPT = 4  # interpreters a process keeps: the serving version and a few before it


def run_in_this_process(file: str, outputs: int, batch: np.ndarray) -> np.ndarray | list[np.ndarray]:
    """`batch` through the cached conversion `file` (see `LiteModel.file`), on one thread.

    For another process than the one that loaded the model (the decode workers, see
    `inference.classifier`): each keeps an interpreter per file it was asked for, the last few. The
    file is loaded only if it has the SHA-256 recorded when it was converted (else LiteUnavailable).
    """
    model = _IN_THIS_PROCESS.get(file)
    if model is None:
        model = LiteModel(read_verified(Path(file)), threads=1, outputs=outputs)
        _IN_THIS_PROCESS[file] = model
        while len(_IN_THIS_PROCESS) > IN_THIS_PROCESS_KEPT:
            _IN_THIS_PROCESS.popitem(last=False)
    else:
        _IN_THIS_PROCESS.move_to_end(file)
    return model.predict_on_batch(batch)


def convert(model: Any) -> bytes:
    """The Keras model as a LiteRT flatbuffer: Keras' SavedModel export, then TensorFlow's converter."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="photobot-lite-") as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        flatbuffer: bytes = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
        return flatbuffer


def _check_same_outputs(model: Any, lite: LiteModel) -> None:
    shape = (PROBE_ROWS, *(int(d) for d in tuple(model.inputs[0].shape)[1:]))
    dtype = str(model.inputs[0].dtype)
    probe = np.random.default_rng(0).random(shape, dtype=np.float32).astype(dtype)
    expected = _as_list(model.predict_on_batch(probe))
    got = _as_list(lite.predict_on_batch(probe))
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        want, have = np.asarray(want, np.float64), np.asarray(have, np.float64)
        if want.shape != have.shape or not np.allclose(have, want, rtol=1e-3, atol=1e-4):
            gap = float(np.max(np.abs(have - want))) if want.shape == have.shape else float("nan")
            raise LiteUnavailable(f"output {index} differs from Keras' (largest gap {gap:.3g})")


def _as_list(outputs: Any) -> list[np.ndarray]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]
