"""Read a PyTorch state dict saved in the legacy (pre-zip) format, without PyTorch and without trusting it.

A legacy `.pth` file is five things in a row: a pickled magic number, a pickled protocol version, a
pickled system-info dict, the pickled state dict (an OrderedDict of tensors whose storages are named by
"persistent ids"), a pickled list of storage keys, and then, for each key, an int64 element count
followed by the raw little-endian bytes of that storage.

Unpickling runs code: a hostile file can name any importable callable. So every pickle here goes
through `_RestrictedUnpickler`, which resolves exactly the few names a state dict needs (an
OrderedDict, `torch._utils._rebuild_tensor_v2` and the typed storage classes) to our own harmless
stand-ins, and refuses everything else with `UnsafeWeightsError` before anything is called.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_INDEX = (
    1 << 40
)  # no size, stride or offset of a real tensor comes near; NumPy's strides overflow far above

# torch storage class name → NumPy dtype of its elements (little-endian, as the file says).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeWeightsError(ValueError):
    """The file is not a plain tensor state dict (it names code we refuse to run, or is malformed)."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` & co: only its element type matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes are filled in after the pickle has been read."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor waiting for its storage's bytes: a strided view of part of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise UnsafeWeightsError(f"storage {self.storage.key} has no data in the file")
        _check_view(self.storage.key, data.size, self.offset, self.shape, self.stride)
        if not self.shape:
            return data[self.offset].copy()
        itemsize = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _check_view(key: str, size: int, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
    """Refuse a view that would read outside its storage before NumPy is asked to make it.

    `as_strided` trusts its arguments: a negative stride or an offset past the end reads memory the
    storage does not own (a crafted file killed the process with SIGSEGV). A state dict holds plain
    tensors, so every number must be non-negative, the view must end inside the storage, and it may
    not hold more elements than the storage (no expanded views, which could ask for any memory).
    """
    if len(shape) != len(stride):
        raise UnsafeWeightsError(
            f"a tensor of storage {key} has {len(shape)} sizes but {len(stride)} strides"
        )
    if not all(0 <= n <= MAX_INDEX for n in (offset, *shape, *stride)):
        raise UnsafeWeightsError(f"a tensor of storage {key} has a negative or out-of-range size or stride")
    elements = math.prod(shape)
    if elements == 0:
        return  # an empty tensor reads nothing
    if offset >= size:
        raise UnsafeWeightsError(f"a tensor starts at {offset}, outside storage {key} of {size} elements")
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if elements > size - offset or last >= size:
        raise UnsafeWeightsError(
            f"a tensor of {elements} elements reaches outside storage {key} of {size} elements"
        )


def _rebuild_tensor_v2(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    """Our stand-in for `torch._utils._rebuild_tensor_v2`: records the view, runs nothing."""
    if not isinstance(storage, _Storage):
        raise UnsafeWeightsError("a tensor was rebuilt from something that is not a storage")
    if not all(isinstance(n, int) for n in (storage_offset, *size, *stride)):
        raise UnsafeWeightsError("a tensor has a non-integer shape, stride or offset")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names a tensor state dict needs; any other global is refused."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(f"refusing to load {module}.{name}: only tensor data is allowed")

    def persistent_load(self, pid: Any) -> _Storage:
        if self._storages is None:
            raise UnsafeWeightsError("unexpected persistent id outside the state dict")
        # ("storage", type, key, location, numel, view_metadata); storage views (old files) are refused.
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and pid[5] is None):
            raise UnsafeWeightsError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, _view = pid
        if (
            not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or not isinstance(numel, int)
            or numel < 0
        ):
            raise UnsafeWeightsError(f"malformed storage reference {pid!r:.80}")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        return storage


def _load_plain(file: BinaryIO) -> Any:
    """Unpickle a header value (magic, protocol, system info, key list): no globals at all."""
    return _RestrictedUnpickler(file).load()


def read_state_dict(source: Path | bytes) -> OrderedDict[str, np.ndarray]:
    """Return the tensors of a legacy-format PyTorch state dict as NumPy arrays, by parameter name.

    Raises UnsafeWeightsError if the file names anything but tensor data, or is not in that format.
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    file = io.BytesIO(raw)
    try:
        if _load_plain(file) != LEGACY_MAGIC:
            raise UnsafeWeightsError("not a legacy PyTorch file (wrong magic number)")
        if _load_plain(file) != LEGACY_PROTOCOL:
            raise UnsafeWeightsError("unsupported legacy PyTorch protocol version")
        info = _load_plain(file)
        if not isinstance(info, dict) or info.get("little_endian") is not True:
            raise UnsafeWeightsError("only little-endian legacy files are supported")
        storages: dict[str, _Storage] = {}
        state = _RestrictedUnpickler(file, storages).load()
        keys = _load_plain(file)
    except UnsafeWeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise UnsafeWeightsError(f"malformed weights file: {error}") from error
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise UnsafeWeightsError("the file does not hold a state dict")
    _read_storages(file, keys, storages)
    tensors: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise UnsafeWeightsError(f"entry {name!r:.60} is not a tensor")
        tensors[name] = value.materialise()
    log.debug("read %d tensors (%d storages)", len(tensors), len(storages))
    return tensors


def _read_storages(file: io.BytesIO, keys: list[Any], storages: dict[str, _Storage]) -> None:
    """Fill each storage from the raw section: int64 element count, then the elements' bytes."""
    for key in keys:
        storage = storages.get(key) if isinstance(key, str) else None
        if storage is None:
            raise UnsafeWeightsError(f"storage key {key!r:.40} was never referenced")
        header = file.read(8)
        if len(header) != 8:
            raise UnsafeWeightsError("truncated weights file")
        (count,) = struct.unpack("<q", header)
        if count != storage.numel:
            raise UnsafeWeightsError(f"storage {key}: {count} elements, expected {storage.numel}")
        data = file.read(count * storage.dtype.itemsize)
        if len(data) != count * storage.dtype.itemsize:
            raise UnsafeWeightsError("truncated weights file")
        storage.data = np.frombuffer(data, dtype=storage.dtype)
