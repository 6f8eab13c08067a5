"""`photobot models list|promote|rollback|add-shipped` against a real model store."""

from __future__ import annotations

import json

import pytest

from inference.catalogue import DEFAULT_CATALOGUE
from inference.model_store import MODEL_FILE, ModelStore
from inference.seeding import SHIPPED_DIR, seed_shipped
from photobot.cli import main
from tests.support.models import add_version, digit_meta


@pytest.fixture
def store(tmp_path, monkeypatch, converted_digit_model_file):
    """Two versions of the tiny digit model, each with its LiteRT conversion copied along: promoting one
    loads it as after its first start, with no conversion (these tests are about the pointer)."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    store = ModelStore(tmp_path / "var" / "models")
    model_file = converted_digit_model_file
    add_version(store, "digits", model_file, digit_meta(test_accuracy=0.91, arch="mlp"))
    add_version(store, "digits", model_file, digit_meta(test_accuracy=0.93, arch="mlp"))
    return store


def test_list_marks_the_serving_version(store, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "digits"
    assert lines[1].startswith("    v1") and "91.00%" in lines[1]
    assert lines[2].startswith("  * v2") and "93.00%" in lines[2]
    assert "flowers" in lines and "no versions yet" in out


def test_list_as_json(store, capsys):
    assert main(["models", "list", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["digits"]["active"] == 2
    assert [v["version"] for v in report["digits"]["versions"]] == [1, 2]
    assert report["digits"]["versions"][0]["accuracy"] == 0.91
    assert report["flowers"] == {
        "active": None,
        "labels": list(DEFAULT_CATALOGUE["flowers"].label_names),
        "versions": [],
    }


def test_list_shows_a_taught_model_with_its_labels_before_its_first_version(store, capsys):
    assert main(["models", "new", "pets", "--labels", "dog", "bird"]) == 0
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("pets (taught: dog, bird)")
    assert lines[at + 1] == (
        "    (no versions yet: teach it photos captioned with its labels, "
        "then `photobot retrain --model pets`)"
    )
    assert main(["models", "list", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pets"] == {"active": None, "labels": ["dog", "bird"], "versions": []}


def test_list_shows_a_deleted_taught_model_as_serving_nothing(store, capsys, tmp_path):
    """A taught model deleted since (its versions kept in the store) was listed as serving `* v1`."""
    store.add_version("pets", store.active("digits").path, {"labels": ["dog", "bird"]})
    store.promote("pets", 1)
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("pets (deleted: its versions are kept, none serves)")
    assert lines[at + 1].startswith("    v1")
    assert main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pets"]["active"] is None


def test_promote_and_rollback_move_the_active_pointer(store, capsys):
    assert main(["models", "rollback", "digits"]) == 0
    assert store.active_version("digits") == 1
    assert "rolled back to v1 (was v2)" in capsys.readouterr().out
    assert main(["models", "promote", "digits", "v2"]) == 0
    assert store.active_version("digits") == 2
    assert "v2 is now serving (was v1)" in capsys.readouterr().out
    assert main(["models", "rollback", "digits", "1"]) == 0
    assert store.active_version("digits") == 1
    capsys.readouterr()
    assert main(["models", "rollback", "digits", "2"]) == 0  # "back" to a newer version: said as it is
    assert "digits: now serving v2 (was v1)" in capsys.readouterr().out


def test_promote_refuses_a_corrupt_model_file_and_keeps_the_pointer(store, capsys):
    broken = store.get("digits", 1)
    broken.model_file.write_bytes(b"PK\x03\x04 definitely not a keras archive")
    assert main(["models", "promote", "digits", "1"]) == 1
    err = capsys.readouterr().err
    assert "refusing to serve it" in err and "v1" in err
    assert store.active_version("digits") == 2


def test_promote_of_an_unknown_version_is_a_clear_error(store, capsys):
    assert main(["models", "promote", "digits", "7"]) == 1
    assert "digits has no version 7" in capsys.readouterr().err
    assert store.active_version("digits") == 2


def test_rollback_with_nothing_earlier_is_a_clear_error(store, capsys):
    store.promote("digits", 1)
    assert main(["models", "rollback", "digits"]) == 1
    assert "no earlier version" in capsys.readouterr().err


def test_add_shipped_stores_this_releases_default_beside_the_serving_version(store, capsys):
    """After an upgrade the store keeps its versions; `add-shipped` puts the new release's default
    beside them without serving it, and `promote` serves it."""
    assert main(["models", "add-shipped", "digits"]) == 0
    out = capsys.readouterr().out
    assert "digits v3: this release's shipped default (serving: v2)" in out
    assert "serve it with: photobot models promote digits 3" in out
    assert store.active_version("digits") == 2
    added = store.get("digits", 3)
    assert added.model_file.read_bytes() == (SHIPPED_DIR / "digits" / MODEL_FILE).read_bytes()
    assert main(["models", "promote", "digits", "3"]) == 0
    assert store.active_version("digits") == 3


@pytest.mark.slow  # builds the flower model from the shipped head and the package's backbone
def test_add_shipped_builds_the_flowers_default_into_a_store_without_serving_it(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    assert main(["models", "add-shipped", "flowers"]) == 0
    assert "flowers v1: this release's shipped default (serving: none)" in capsys.readouterr().out
    store = ModelStore(tmp_path / "var" / "models")
    added = store.get("flowers", 1)
    assert store.active_version("flowers") is None
    assert (added.path / "head.npz").read_bytes() == (SHIPPED_DIR / "flowers" / "head.npz").read_bytes()
    assert added.meta["ood"]["method"] == "photo-neighbours-cosine" and added.labels[0] == "daisy"


def test_add_shipped_knows_only_models_that_ship_a_default(store, capsys):
    with pytest.raises(SystemExit):
        main(["models", "add-shipped", "pets"])
    assert "invalid choice: 'pets'" in capsys.readouterr().err


@pytest.mark.slow  # real training: three one-epoch runs on 1,000 MNIST digits
def test_train_serves_a_new_version_only_if_it_is_no_worse_than_the_serving_one(
    tmp_path, monkeypatch, mnist_path, capsys
):
    """README: a new model serves only if it is better. `photobot train` compares the accuracy each
    version's meta records on the MNIST test set; --force serves it anyway."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    store = ModelStore(tmp_path / "var" / "models")
    assert seed_shipped(store, "digits").meta["test_accuracy"] == 0.9956  # v1 serving
    quick = ["train", "digits", "--arch", "mlp", "--hidden", "10", "--epochs", "1", "--limit", "1000"]

    assert main(quick) == 0
    weak = store.get("digits", 2)
    assert store.active_version("digits") == 1
    assert weak.meta["status"] == "rejected"  # so no rollback lands on it
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"saved digits v2 in {weak.path} (not serving: MNIST test {weak.meta['test_accuracy']:.2%}, "
        "below serving v1's 99.56%; to serve it anyway: photobot models promote digits 2)"
    )

    assert main([*quick, "--force"]) == 0
    assert store.active_version("digits") == 3
    assert "(now serving, forced: MNIST test " in capsys.readouterr().out
    assert main(["models", "rollback", "digits"]) == 0
    assert store.active_version("digits") == 1  # past the rejected v2

    # Against a version that recorded less on the same set, the new one serves.
    add_version(store, "digits", weak.model_file, digit_meta(test_accuracy=0.05, data={"mnist_test": 10_000}))
    assert store.active_version("digits") == 4
    assert main(quick) == 0
    assert store.active_version("digits") == 5
    assert "(now serving: MNIST test " in capsys.readouterr().out
    assert "serving v4's 5.00%" in store.get("digits", 5).meta["gate"]["reason"]


def test_train_help_offers_force_beside_no_promote(capsys):
    with pytest.raises(SystemExit):
        main(["train", "digits", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--no-promote" in help_text
    assert (
        "--force serve the new version even if its test accuracy is below the serving version's" in help_text
    )
    with pytest.raises(SystemExit):
        main(["train", "digits", "--force", "--no-promote"])
    assert "not allowed with argument" in capsys.readouterr().err
