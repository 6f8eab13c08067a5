import json

import pytest

from inference.errors import ModelUnavailable
from inference.model_store import MODEL_FILE, ModelStore


def _add(store: ModelStore, name: str = "digits", **meta) -> int:
    with store.new_version(name, {"labels": ["0", "1"], **meta}) as staged:
        (staged.path / MODEL_FILE).write_bytes(b"weights")
    return staged.version


def test_versions_are_numbered_in_order_and_carry_their_meta(tmp_path):
    store = ModelStore(tmp_path)
    assert [_add(store), _add(store), _add(store)] == [1, 2, 3]
    versions = store.versions("digits")
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[0].meta["name"] == "digits" and versions[0].meta["version"] == 1
    assert versions[0].labels == ["0", "1"]
    assert (versions[0].model_file).read_bytes() == b"weights"


def test_a_failed_write_leaves_no_version_and_no_staging_directory(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(RuntimeError), store.new_version("digits", {}) as staged:
        (staged.path / MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("training crashed")
    assert store.versions("digits") == []
    assert list((tmp_path / "digits").iterdir()) == []


def test_a_version_is_not_active_until_promoted(tmp_path):
    store = ModelStore(tmp_path)
    _add(store)
    assert store.active("digits") is None
    store.promote("digits", 1)
    assert store.active("digits").version == 1
    assert (tmp_path / "digits" / "active").read_text() == "1\n"


def test_promote_refuses_a_missing_version(tmp_path):
    store = ModelStore(tmp_path)
    _add(store)
    with pytest.raises(ModelUnavailable):
        store.promote("digits", 7)


def test_rollback_goes_to_the_newest_earlier_version_that_was_not_rejected(tmp_path):
    store = ModelStore(tmp_path)
    _add(store)
    _add(store, status="rejected")
    _add(store)
    store.promote("digits", 3)
    assert store.rollback("digits").version == 1
    assert store.rollback("digits", 3).version == 3
    store.promote("digits", 1)
    with pytest.raises(ModelUnavailable):
        store.rollback("digits")


def test_update_meta_merges_fields(tmp_path):
    store = ModelStore(tmp_path)
    _add(store, metrics={"accuracy": 0.9})
    store.update_meta("digits", 1, status="rejected", reason="worse")
    meta = json.loads((tmp_path / "digits" / "v1" / "meta.json").read_text())
    assert meta["status"] == "rejected" and meta["metrics"] == {"accuracy": 0.9}


def test_a_version_without_meta_is_ignored(tmp_path):
    store = ModelStore(tmp_path)
    (tmp_path / "digits" / "v5").mkdir(parents=True)
    assert store.versions("digits") == []
    assert _add(store) == 6
