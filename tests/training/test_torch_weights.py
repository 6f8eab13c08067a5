"""The legacy PyTorch weight reader: reads real tensors, runs nothing else.

The small files here are written opcode by opcode (PyTorch is not installed), in the exact layout
`torch.save(..., _use_new_zipfile_serialization=False)` produces.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO
from training.effnet_lite0 import weights_file
from training.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL, UnsafeWeightsError, read_state_dict

SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _unicode(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _tensor(key: str, numel: int, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """`_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())` as opcodes."""
    storage = _tuple(
        [
            _unicode("storage"),
            _global("torch", "FloatStorage"),
            _unicode(key),
            _unicode("cpu"),
            _int(numel),
            pickle.NONE,
        ]
    )
    hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    args = _tuple(
        [
            storage + pickle.BINPERSID,
            _int(offset),
            _tuple([_int(n) for n in shape]),
            _tuple([_int(s) for s in stride]),
            pickle.NEWFALSE,
            hooks,
        ]
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _legacy_file(state_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, SYS_INFO))
    body = header + state_pickle + pickle.dumps(list(storages), protocol=2)
    for values in storages.values():
        body += struct.pack("<q", values.size) + values.astype("<f4").tobytes()
    return body


def _state_dict(entries: list[tuple[str, bytes]]) -> bytes:
    items = b"".join(_unicode(name) + value for name, value in entries)
    return (
        pickle.PROTO
        + b"\x02"
        + _global("collections", "OrderedDict")
        + pickle.EMPTY_TUPLE
        + pickle.REDUCE
        + pickle.MARK
        + items
        + pickle.SETITEMS
        + pickle.STOP
    )


def test_reads_tensors_views_and_offsets_of_shared_storages() -> None:
    storage = np.arange(12, dtype=np.float32)
    state = _state_dict(
        [
            ("conv.weight", _tensor("s0", 12, 0, (3, 4), (4, 1))),
            ("conv.transposed", _tensor("s0", 12, 0, (4, 3), (1, 4))),  # a non-contiguous view
            ("bias", _tensor("s0", 12, 8, (4,), (1,))),  # offset into the same storage
        ]
    )
    tensors = read_state_dict(_legacy_file(state, {"s0": storage}))
    assert list(tensors) == ["conv.weight", "conv.transposed", "bias"]
    np.testing.assert_array_equal(tensors["conv.weight"], storage.reshape(3, 4))
    np.testing.assert_array_equal(tensors["conv.transposed"], storage.reshape(3, 4).T)
    np.testing.assert_array_equal(tensors["bias"], [8, 9, 10, 11])


def test_reads_the_efficientnet_lite0_weights_of_the_installed_package() -> None:
    tensors = read_state_dict(weights_file())
    assert len(tensors) == 296
    assert sum(t.size for t in tensors.values()) == 4_694_073
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert tensors["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert tensors["_fc.weight"].shape == (1000, 1280)
    assert tensors["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(tensors["_bn1.running_var"] > 0)
    assert np.isfinite(tensors["_fc.weight"]).all() and 0.01 < tensors["_fc.weight"].std() < 1


def test_refuses_a_pickle_that_would_run_a_command(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _global("os", "system") + _tuple([_unicode(f"touch {marker}")]) + pickle.REDUCE
    state = _state_dict([("weight", evil)])
    with pytest.raises(UnsafeWeightsError, match=r"os\.system"):
        read_state_dict(_legacy_file(state, {}))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_parameter"),
        ("numpy", "frombuffer"),
    ],
)
def test_refuses_any_global_but_tensor_rebuilding(module: str, name: str) -> None:
    state = _state_dict([("weight", _global(module, name) + pickle.EMPTY_TUPLE + pickle.REDUCE)])
    with pytest.raises(UnsafeWeightsError, match="refusing"):
        read_state_dict(_legacy_file(state, {}))


def test_refuses_code_hidden_in_the_header(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = (
        pickle.PROTO
        + b"\x02"
        + _global("os", "system")
        + _tuple([_unicode(f"touch {marker}")])
        + pickle.REDUCE
        + pickle.STOP
    )
    with pytest.raises(UnsafeWeightsError):
        read_state_dict(evil)
    assert not marker.exists()


def test_refuses_entries_that_are_not_tensors_and_storages_that_do_not_fit() -> None:
    not_a_tensor = _state_dict([("weight", _int(3))])
    with pytest.raises(UnsafeWeightsError, match="not a tensor"):
        read_state_dict(_legacy_file(not_a_tensor, {}))
    too_far = _state_dict([("weight", _tensor("s0", 4, 2, (4,), (1,)))])
    with pytest.raises(UnsafeWeightsError, match="outside"):
        read_state_dict(_legacy_file(too_far, {"s0": np.zeros(4, np.float32)}))
    truncated = _legacy_file(_state_dict([("weight", _tensor("s0", 4, 0, (4,), (1,)))]), {"s0": np.zeros(4)})
    with pytest.raises(UnsafeWeightsError, match="truncated"):
        read_state_dict(truncated[:-3])


def test_refuses_files_that_are_not_legacy_state_dicts() -> None:
    with pytest.raises(UnsafeWeightsError, match="magic"):
        read_state_dict(pickle.dumps(12345, protocol=2))
    with pytest.raises(UnsafeWeightsError):
        read_state_dict(b"PK\x03\x04 a zip-format checkpoint")


def test_an_ordered_dict_of_tensors_is_returned_in_file_order() -> None:
    tensors = read_state_dict(
        _legacy_file(
            _state_dict([("b", _tensor("k", 1, 0, (), ())), ("a", _tensor("k", 1, 0, (1,), (1,)))]),
            {"k": np.ones(1, np.float32)},
        )
    )
    assert isinstance(tensors, OrderedDict) and list(tensors) == ["b", "a"]
    assert tensors["b"].shape == () and float(tensors["b"]) == 1.0


_READ_IN_A_CHILD = """
import json, sys
from training.torch_weights import UnsafeWeightsError, read_state_dict
try:
    tensors = read_state_dict(open(sys.argv[1], "rb").read())
except UnsafeWeightsError as error:
    print(json.dumps({"error": "UnsafeWeightsError", "message": str(error)}))
else:
    print(json.dumps({"shapes": {name: list(t.shape) for name, t in tensors.items()}}))
"""


def _read_in_a_child(tmp_path: Path, data: bytes) -> dict:
    """read_state_dict in another process: a crash there (SIGSEGV) fails the test, not pytest."""
    path = tmp_path / "crafted.pth"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, f"the reader died with {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("offset", "shape", "stride", "message"),
    [
        (0, (4,), (-50_000_000,), "negative"),  # read far before the storage: SIGSEGV before the fix
        (3, (4, 4), (-1, -1_000_000), "negative"),
        (0, (2,), (2_000_000_000,), "outside storage"),  # a stride that leaps past the end
        (10, (), (), "outside storage"),  # a scalar past the end (an IndexError before)
        (-1, (), (), "negative"),  # a scalar before the start (silently the last element before)
        (0, (1_000_000,), (0,), "1000000 elements"),  # an expanded view: a million floats from four
        (2, (2, 2), (1, 1), "outside storage"),  # more elements than the storage holds after the offset
    ],
)
def test_refuses_views_outside_their_storage_without_crashing(
    tmp_path: Path, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], message: str
) -> None:
    state = _state_dict([("weight", _tensor("s0", 4, offset, shape, stride))])
    answer = _read_in_a_child(tmp_path, _legacy_file(state, {"s0": np.arange(4, dtype=np.float32)}))
    assert answer.get("error") == "UnsafeWeightsError", answer
    assert message in answer["message"]


def test_a_child_reads_a_plain_file_and_an_empty_tensor(tmp_path: Path) -> None:
    """The subprocess check itself: a good file comes back as tensors (and an empty view is fine)."""
    state = _state_dict(
        [("weight", _tensor("s0", 4, 0, (2, 2), (2, 1))), ("empty", _tensor("s0", 4, 4, (0, 3), (3, 1)))]
    )
    answer = _read_in_a_child(tmp_path, _legacy_file(state, {"s0": np.arange(4, dtype=np.float32)}))
    assert answer == {"shapes": {"weight": [2, 2], "empty": [0, 3]}}
