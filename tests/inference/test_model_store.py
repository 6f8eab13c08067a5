import hashlib
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


def test_rollback_goes_back_to_a_version_that_has_served_not_one_kept_unserved(tmp_path):
    store = ModelStore(tmp_path)
    _add(store)
    store.promote("digits", 1)
    _add(store)  # trained with --no-promote: nobody has seen it answer
    _add(store)
    store.promote("digits", 3)
    assert [("served_at" in v.meta) for v in store.versions("digits")] == [True, False, True]
    assert store.rollback_target("digits") == 1
    assert store.rollback("digits").version == 1
    assert store.rollback_target("digits", 2) == 2  # asked for by number: served as asked


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


def test_publishing_records_the_sha256_of_the_model_file(tmp_path):
    store = ModelStore(tmp_path)
    store.get("digits", _add(store))
    meta = json.loads((tmp_path / "digits" / "v1" / "meta.json").read_text())
    assert meta["sha256"] == {MODEL_FILE: hashlib.sha256(b"weights").hexdigest()}
    # a stale hash handed in with the meta (copied from elsewhere) is replaced by the file's own
    _add(store, sha256={MODEL_FILE: "0" * 64})
    assert store.get("digits", 2).meta["sha256"][MODEL_FILE] == hashlib.sha256(b"weights").hexdigest()


def _foreign_version(tmp_path, store: ModelStore) -> None:
    """v2 of digits: a symlink to a folder outside the store that looks like a version."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / MODEL_FILE).write_bytes(b"someone else's weights")
    (outside / "meta.json").write_text(json.dumps({"labels": ["0", "1"], "name": "digits", "version": 2}))
    (store.root / "digits" / "v2").symlink_to(outside, target_is_directory=True)


def test_a_version_folder_that_is_a_symlink_is_refused(tmp_path):
    store = ModelStore(tmp_path / "models")
    _add(store)
    _foreign_version(tmp_path, store)
    assert [v.version for v in store.versions("digits")] == [1]
    with pytest.raises(ModelUnavailable, match="link or lies outside the model store"):
        store.get("digits", 2)
    with pytest.raises(ModelUnavailable, match="link or lies outside"):
        store.promote("digits", 2)
    assert _add(store) == 3  # the name stays taken: nothing is published over the link


def test_a_model_folder_linked_out_of_the_store_is_refused(tmp_path):
    store = ModelStore(tmp_path / "models")
    outside = tmp_path / "elsewhere"
    _add(ModelStore(outside))
    (store.root).mkdir()
    (store.root / "digits").symlink_to(outside / "digits", target_is_directory=True)
    assert store.versions("digits") == []
    with pytest.raises(ModelUnavailable, match="outside the model store"):
        store.get("digits", 1)


def test_a_store_reached_through_a_symlink_still_works(tmp_path):
    """Only what lies inside the store is checked: the store's own path may be a link (var/models →)."""
    real = tmp_path / "real"
    _add(ModelStore(real))
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert [v.version for v in ModelStore(tmp_path / "link").versions("digits")] == [1]


@pytest.fixture(scope="module")
def digit_model(tiny_digit_model, tmp_path_factory):
    return tiny_digit_model(tmp_path_factory.mktemp("models") / "a.keras", hidden=32, seed=0)


async def test_a_model_file_changed_after_publication_is_refused_and_the_old_version_keeps_serving(
    tmp_path, digit_model, mnist_path, caplog
):
    import zipfile

    from inference.classifier import Classifier
    from inference.engine import EngineConfig
    from tests.support.models import add_version, digit_meta, digit_photo, load_mnist_subset

    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", digit_model, digit_meta())
    changed = add_version(store, "digits", digit_model, digit_meta(), promote=False)
    with open(changed.model_file, "ab") as handle:
        handle.write(b"\0")  # one byte more: still a Keras archive that loads, but not the published file
    with zipfile.ZipFile(changed.model_file) as archive:
        assert {"config.json", "model.weights.h5"} <= set(archive.namelist())
    photo = digit_photo(load_mnist_subset(mnist_path, n_test=1)[2][0], seed=0)
    config = EngineConfig(reload_poll_s=0, max_wait_ms=5.0)
    async with Classifier(store, config, names=("digits",), shipped_dir=None) as classifier:
        store.promote("digits", changed.version)
        with pytest.raises(ModelUnavailable, match="has changed since it was published"):
            await classifier.reload("digits")
        answered = await classifier.classify(photo, "digit")
        status = classifier.models()["digits"]
    assert answered.version == 1 and status.version == 1
    assert "changed since it was published" in status.refused[2]
    assert any("v2 refused (v1 keeps serving)" in r.getMessage() for r in caplog.records)
