"""`photobot retrain --model flowers`: the head is refitted on cached features of base + chat photos.

A real serving flower model is trained first by `photobot train flowers` on 3 classes × 24 real photos
(the real EfficientNet-Lite0 backbone); chat photos are new crops of some of those flowers plus one
photo of a class no model knows, labelled through the real storage API.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from inference.model_store import ModelStore
from photobot.cli import main
from photobot.settings import Settings
from photobot.wiring import retrain_settings, taught_catalogue
from storage import SyncStore
from tests.support.retrain import ONE_PERSON, store_labels
from training.retrain import RetrainOptions, run_retrain

pytestmark = pytest.mark.slow
CLASSES = ("daisy", "roses", "sunflowers")
PER_CLASS = 24


def _new_photo(path: Path, rng: np.random.Generator) -> bytes:
    with Image.open(path) as original:
        image = original.convert("RGB")
    width, height = image.size
    left, top = int(rng.integers(0, width // 5)), int(rng.integers(0, height // 5))
    image = ImageOps.mirror(image.crop((left, top, left + int(width * 0.8), top + int(height * 0.8))))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def _trained_store(folder: Path, flowers_path: Path, mnist_path: Path, *train_options: str):
    """A store whose serving flowers `photobot train flowers` made from 3 classes × 24 real photos, which
    are also its base data; yields its Settings."""
    photos = folder / "photos"
    for label in CLASSES:
        (photos / label).mkdir(parents=True)
        for photo in sorted((flowers_path / label).glob("*.jpg"))[:PER_CLASS]:
            os.symlink(photo, photos / label / photo.name)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)
        monkeypatch.setenv("DATA_DIR", str(folder / "var"))
        monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
        quick = ["--validation-percent", "20", "--test-percent", "20", "--non-flower-photos", "12"]
        train = ["train", "flowers", "--images", str(photos), *quick, *train_options, "--no-package-photos"]
        assert main(train) == 0
        (folder / "var" / "datasets").mkdir()
        os.symlink(photos, folder / "var" / "datasets" / "flower_photos")  # the base data of this store
        yield Settings(data_dir=folder / "var", datasets=(), retrain_min_new_labels=5, **ONE_PERSON)


@pytest.fixture(scope="module")
def settings(flowers_path: Path, mnist_path: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from _trained_store(tmp_path_factory.mktemp("flowers-retrain"), flowers_path, mnist_path)


def test_the_flower_head_is_retrained_on_chat_photos_and_new_classes_are_reported_not_added(
    settings: Settings, flowers_path: Path
) -> None:
    rng = np.random.default_rng(0)
    chat = [
        (_new_photo(path, rng), label)
        for label in CLASSES
        for path in sorted((flowers_path / label).glob("*.jpg"))[:5]
    ]
    chat.append((_new_photo(sorted((flowers_path / "tulips").glob("*.jpg"))[0], rng), "orchids"))
    store_labels(settings, chat, model="flowers", user_id=51)
    outcome = run_retrain(retrain_settings(settings), RetrainOptions(model="flowers", epochs=40))
    text = outcome.report.text
    assert outcome.decision in ("promote", "reject") and outcome.candidate_version == 2
    assert "New classes from chat (not added; a model change is needed): orchids (1)" in text
    assert "per label: daisy 5, roses 5, sunflowers 5" in text and "from 1 person, most first: 15" in text
    assert "flowers test split (" in text
    models = ModelStore(settings.models_dir)
    candidate = models.get("flowers", 2)
    assert candidate.labels == list(CLASSES) and (candidate.path / "head.npz").is_file()
    assert candidate.meta["parent"] == 1 and candidate.meta["data"]["new_classes_not_added"] == {"orchids": 1}
    assert 0 < candidate.meta["ood"]["unsure_above"] <= candidate.meta["ood"]["reject_above"]
    serving_ood = models.get("flowers", 1).meta["ood"]
    assert candidate.meta["ood"].get("imagenet") == serving_ood.get(
        "imagenet"
    )  # the ImageNet evidence is kept
    # the detector keeps its kind, and the chat's training photos join the bank of training photos
    assert candidate.meta["ood"]["method"] == serving_ood["method"] == "photo-neighbours-cosine"
    assert sum(candidate.meta["ood"]["bank"]["counts"]) > sum(serving_ood["bank"]["counts"])
    assert models.active_version("flowers") == (2 if outcome.decision == "promote" else 1)
    with SyncStore(settings.database_path, settings.images_dir) as store:
        job = store.get_retrain_job(outcome.job_id)
    assert job.status == ("succeeded" if outcome.decision == "promote" else "rejected")
    assert [Path(p).name for p in job.metrics["report_images"]][:2] == ["confusion.png", "curves.png"]


@pytest.fixture(scope="module")
def tuned_settings(flowers_path: Path, mnist_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A store whose serving flowers are fine-tuned (`--fine-tune-keep-imagenet`, one quick epoch)."""
    tune = ["--fine-tune", "--fine-tune-keep-imagenet", "--fine-tune-variants", "1"]
    folder = tmp_path_factory.mktemp("flowers-retrain-tuned")
    yield from _trained_store(folder, flowers_path, mnist_path, *tune, "--fine-tune-epochs", "1")


def test_a_fine_tuned_serving_version_is_retrained_on_its_own_backbone_and_learns_an_added_label(
    tuned_settings: Settings, flowers_path: Path
) -> None:
    import keras

    from inference.flowers import PREPROCESSING_ID
    from inference.taught import MIN_PHOTOS_PER_LABEL
    from training.effnet_lite0 import backbone_id
    from training.flower_model import tuned_backbone_id, version_backbone

    settings = tuned_settings
    models = ModelStore(settings.models_dir)
    serving = models.get("flowers", 1)
    assert serving.meta["fine_tuned"] is True and serving.meta["backbone"].startswith(f"{backbone_id()}-ft-")
    assert serving.meta["outputs"] == ["probabilities", "distances", "imagenet"]
    with SyncStore(settings.database_path, settings.images_dir) as store:
        store.add_model_label("flowers", "lavender")
    rng = np.random.default_rng(1)
    chat = [
        (_new_photo(path, rng), label)
        for label in CLASSES
        for path in sorted((flowers_path / label).glob("*.jpg"))[PER_CLASS : PER_CLASS + 3]
    ]
    tulips = sorted((flowers_path / "tulips").glob("*.jpg"))[:MIN_PHOTOS_PER_LABEL]
    chat += [(_new_photo(path, rng), "lavender") for path in tulips]
    store_labels(settings, chat, model="flowers", user_id=52)

    options = RetrainOptions(model="flowers", epochs=20)
    outcome = run_retrain(retrain_settings(settings), options, taught_catalogue(settings))
    assert outcome.candidate_version == 2, outcome.report.text
    candidate = models.get("flowers", 2)
    assert candidate.labels == [*CLASSES, "lavender"], outcome.report.text
    for key in ("backbone", "fine_tuned", "outputs", "preprocessing"):
        assert candidate.meta[key] == serving.meta[key], key
    assert set(candidate.meta["ood"]["imagenet"]["label_classes"]) == {"lavender"}
    # the features came from the tuned backbone, cached under its name, and the candidate serves it
    cached = settings.data_dir / "cache" / "bottlenecks" / f"{serving.meta['backbone']}-{PREPROCESSING_ID}"
    assert cached.is_dir() and any(cached.iterdir())
    assert tuned_backbone_id(version_backbone(candidate)) == serving.meta["backbone"]
    served = keras.saving.load_model(candidate.model_file, safe_mode=True)
    assert [output.shape[-1] for output in served.outputs][::2] == [4, 1000]
