"""A flower taught as a new label from the chat is learned: `/addlabel flowers lavender`, about 20
captioned photos from four people, `/retrain flowers` (issue 22).

Real throughout: a three-flower model trained by `photobot train flowers` on real photos (daisy,
dandelion, sunflowers), 20 real tulip photos taught as
`lavender` through the real storage API, the real retrain and gate, and both versions measured through
the served engine (`photobot evaluate`'s own function) on the flowers' test split and on tulips never
taught.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from inference.model_store import ModelStore
from photobot.cli import main
from photobot.commands.evaluate import evaluate_folder
from photobot.settings import Settings
from photobot.wiring import retrain_settings, taught_catalogue
from storage import SyncStore
from tests.support.retrain import store_labels
from training.retrain import RetrainOptions, run_retrain

pytestmark = pytest.mark.slow
CLASSES = ("daisy", "dandelion", "sunflowers")
PER_CLASS = 80
TAUGHT, UNSEEN = 20, 60
PEOPLE = 4


def _link(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(path, folder / path.name)


@pytest.fixture(scope="module")
def served(flowers_path: Path, mnist_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A data dir serving a three-flower model, and the folders `photobot evaluate` reads: the
    flowers' test split and tulips never taught, labelled `lavender`."""
    from training.flower_data import list_photos, split_photos

    folder = tmp_path_factory.mktemp("added-flower")
    photos = folder / "photos"
    for label in CLASSES:
        for photo in sorted((flowers_path / label).glob("*.jpg"))[:PER_CLASS]:
            _link(photo, photos / label)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)
        monkeypatch.setenv("DATA_DIR", str(folder / "var"))
        monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
        quick = ["--validation-percent", "15", "--test-percent", "25", "--non-flower-photos", "40"]
        assert main(["train", "flowers", "--images", str(photos), *quick, "--no-package-photos"]) == 0
    (folder / "var" / "datasets").mkdir()
    os.symlink(photos, folder / "var" / "datasets" / "flower_photos")  # the base data of this store
    for test in split_photos(list_photos(photos).photos, 15, 25)["test"]:
        _link(test.path, folder / "eval" / "flowers" / test.label)
    tulips = sorted((flowers_path / "tulips").glob("*.jpg"))
    for tulip in tulips[TAUGHT : TAUGHT + UNSEEN]:
        _link(tulip, folder / "eval" / "lavender" / "lavender")
    settings = Settings(
        data_dir=folder / "var",
        datasets=(),
        retrain_min_contributors=PEOPLE,
        retrain_max_user_share=1.0 / PEOPLE,
    )
    return settings, tulips[:TAUGHT], folder / "eval"


def _right(settings: Settings, folder: Path) -> tuple[int, float]:
    """The version that answered and the share answered right as served (sure or unsure)."""
    report, _ = asyncio.run(evaluate_folder(folder, "flowers", settings))
    return report["version"], report["accuracy"]


def test_a_flower_taught_from_twenty_photos_is_answered_on_unseen_photos_and_the_old_flowers_hold(
    served: tuple[Settings, list[Path], Path],
) -> None:
    settings, taught, folders = served
    version, flowers_before = _right(settings, folders / "flowers")
    assert version == 1
    with SyncStore(settings.database_path, settings.images_dir) as store:
        store.add_model_label("flowers", "lavender")
    for person in range(PEOPLE):
        mine = [(path.read_bytes(), "lavender") for path in taught[person::PEOPLE]]
        store_labels(settings, mine, model="flowers", user_id=300 + person)

    outcome = run_retrain(
        retrain_settings(settings), RetrainOptions(model="flowers"), taught_catalogue(settings)
    )
    assert outcome.decision == "promote", outcome.report.text
    serving = ModelStore(settings.models_dir).active("flowers")
    assert serving is not None and serving.labels == [*CLASSES, "lavender"]
    version, flowers_after = _right(settings, folders / "flowers")
    assert version == 2
    assert flowers_after >= flowers_before, (flowers_before, flowers_after)
    _, tulips = _right(settings, folders / "lavender")
    assert tulips >= 0.5, tulips  # chance: 25% among the four labels
