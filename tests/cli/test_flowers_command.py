"""`photobot train flowers` on a folder of real photos: the store, meta.json, JSON, the warm cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inference.flowers import PREPROCESSING_ID
from inference.model_store import ModelStore
from photobot.cli import main

PER_CLASS = 24
QUICK = [
    "--validation-percent",
    "20",
    "--test-percent",
    "20",
    "--non-flower-photos",
    "12",
    "--no-package-photos",
]


@pytest.fixture
def photos(flowers_path: Path, tmp_path: Path) -> Path:
    root = tmp_path / "my_flowers"
    for label in ("daisy", "roses", "sunflowers"):
        (root / label).mkdir(parents=True)
        for photo in sorted((flowers_path / label).glob("*.jpg"))[:PER_CLASS]:
            os.symlink(photo, root / label / photo.name)
    return root


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.slow  # trains a flower head on real photos
def test_train_flowers_stores_a_serving_version_and_a_second_run_extracts_nothing(
    photos: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "flowers", "--images", str(photos), *QUICK, "--json"]) == 0
    first = capsys.readouterr().out
    report = _last_json(first)
    assert report["model"] == "flowers" and report["version"] == 1
    assert 0.6 <= report["test_accuracy"] <= 1.0 and set(report["per_class"]) == {
        "daisy",
        "roses",
        "sunflowers",
    }
    assert report["non_flowers"]["synthetic"]["n"] == 12 and "package" not in report["non_flowers"]
    assert f"{3 * PER_CLASS + 12 + 12 + 4} photos needed feature extraction" in first

    store = ModelStore(data_dir / "models")
    version = store.active("flowers")
    assert version is not None and version.version == 1
    assert version.labels == ["daisy", "roses", "sunflowers"]
    assert version.meta["preprocessing"] == PREPROCESSING_ID
    assert version.meta["outputs"] == ["probabilities", "distances", "imagenet"]
    ood = version.meta["ood"]
    assert 0 < ood["unsure_above"] <= ood["reject_above"] and 0 < ood["min_confidence"] <= 0.5
    # refused by the nearest training photos: each class's training photos are in the bank
    assert ood["method"] == "photo-neighbours-cosine" and len(ood["bank"]["counts"]) == 3
    assert sum(ood["bank"]["counts"]) == version.meta["data"]["splits"]["train"]
    assert ood["second_look"]["doubt_above"] <= ood["second_look"]["refuse_above"]
    # the ImageNet evidence: the classes training flowers were taken for, thresholds from validation
    imagenet = ood["imagenet"]
    assert imagenet["flower_classes"] and 985 in imagenet["flower_classes"]  # ImageNet's "daisy"
    assert 0 < imagenet["unsure_above"] <= imagenet["reject_above"] <= 1
    assert version.meta["data"]["classes"] == {
        "daisy": PER_CLASS,
        "roses": PER_CLASS,
        "sunflowers": PER_CLASS,
    }
    assert sum(version.meta["data"]["splits"].values()) == 3 * PER_CLASS
    assert version.meta["command"][:3] == ["photobot", "train", "flowers"] or version.meta["command"]
    assert (version.path / "model.keras").is_file() and (version.path / "head.npz").is_file()

    assert main(["train", "flowers", "--images", str(photos), *QUICK, "--json", "--no-promote"]) == 0
    second = capsys.readouterr().out
    assert "0 photos needed feature extraction" in second
    assert _last_json(second)["test_accuracy"] == report["test_accuracy"]  # same features, same seed
    assert store.active_version("flowers") == 1 and store.get("flowers", 2).meta["parent"] == 1


def test_unusable_folders_are_refused_with_a_clear_message(
    photos: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for label in ("roses", "sunflowers"):
        for photo in list((photos / label).iterdir())[5:]:
            photo.unlink()
    assert main(["train", "flowers", "--images", str(photos), *QUICK]) == 1
    assert "at least 20 photos; too few: roses (5), sunflowers (5)" in capsys.readouterr().err
    assert main(["train", "flowers", "--images", str(photos / "daisy"), *QUICK]) == 1
    assert "at least two classes" in capsys.readouterr().err
    assert main(["train", "flowers", "--test-percent", "70"]) == 1
    assert "--test-percent must be between 0 and 50" in capsys.readouterr().err
    assert not (data_dir / "models" / "flowers").exists()


@pytest.mark.slow
def test_fine_tune_retrains_the_top_of_the_backbone_and_ships_it_as_a_float16_top(
    photos: Path, data_dir: Path, flower_backbone, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras
    import numpy as np

    from training.effnet_lite0 import backbone_id
    from training.flower_data import load_pixels
    from training.flower_model import TOP_FILE, export_shipped, seed_flower_model

    assert main(["train", "flowers", "--images", str(photos), *QUICK, "--fine-tune", "--json"]) == 0
    output = capsys.readouterr().out
    assert "fine-tune: epoch 1" in output
    report = _last_json(output)
    assert report["test_accuracy"] >= 0.6
    version = ModelStore(data_dir / "models").active("flowers")
    assert version.meta["fine_tuned"] is True
    assert version.meta["backbone"].startswith(f"{backbone_id()}-ft-")
    model = keras.saving.load_model(version.model_file, safe_mode=True)
    paths = [p for label in ("daisy", "roses", "sunflowers") for p in sorted((photos / label).iterdir())[-3:]]
    pixels = np.stack([load_pixels(p) for p in paths]).astype(np.float32)
    tuned = np.asarray(model.get_layer("efficientnet_lite0").predict_on_batch(pixels))
    base = np.asarray(flower_backbone.predict_on_batch(pixels))
    assert tuned.shape == base.shape and not np.allclose(tuned, base, atol=1e-3)

    # it ships: the head, and only the tuned top of the backbone (blocks 14-15 and the head conv), float16
    shipped = export_shipped(version, data_dir / "shipped")
    assert sorted(p.name for p in shipped.iterdir()) == ["head.npz", "meta.json", TOP_FILE]
    assert (shipped / TOP_FILE).stat().st_size < 4_000_000
    with np.load(shipped / TOP_FILE) as top:
        assert {a.dtype for a in (top[k] for k in top.files)} == {np.dtype(np.float16)}
        layers = {key.rsplit(".", 1)[0] for key in top.files}
    assert layers and all(name.startswith(("blocks_14_", "blocks_15_", "conv_head")) for name in layers)
    meta = json.loads((shipped / "meta.json").read_text())
    assert meta["backbone_top"]["rounded_from"] == version.meta["backbone"]

    # a fresh install rebuilds it from the package and the top, and answers as the trained version does
    seeded = seed_flower_model(ModelStore(data_dir / "fresh"), shipped)
    assert seeded is not None and seeded.meta["fine_tuned"] is True
    assert seeded.meta["backbone"] == meta["backbone"] and seeded.meta["backbone"].startswith(
        f"{backbone_id()}-ft-"
    )
    served = keras.saving.load_model(seeded.model_file, safe_mode=True)
    got, want = served.predict_on_batch(pixels), model.predict_on_batch(pixels)
    assert len(got) == len(want) == len(version.meta["outputs"])
    probabilities, wanted = np.asarray(got[0]), np.asarray(want[0])
    # the float16 top changes no answer and moves probabilities and distances by < 0.1% (measured in
    # docs/performance.md)
    assert np.array_equal(probabilities.argmax(1), wanted.argmax(1))
    assert np.abs(probabilities - wanted).max() < 1e-3
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-3, atol=1e-3)
