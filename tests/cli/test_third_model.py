"""A third model added to the catalogue, and nothing else, is served, labelled, exported and retrained.

"pets" (dog or bird) is one `ModelSpec` added with `DEFAULT_CATALOGUE.with_model`: its base data is a
folder of real ImageNet photos (`$PHOTOBOT_DATASETS/other_photos`, told apart by the WordNet ids in
their names) copied into `pet_photos/<label>/`, trained here by the image trainer every image
classifier uses. The same functions the commands call then serve it (the Classifier; the real bot
through the fake Bot API, started with the extended catalogue), export its labelled photos and
retrain it: no code path knows the name "pets".
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from bot.texts import text
from inference import flowers
from inference.catalogue import DEFAULT_CATALOGUE, Label, ModelKind, ModelSpec
from inference.model_store import ModelStore
from photobot.serving import build_classifier
from photobot.settings import Settings
from photobot.wiring import retrain_settings
from storage import SyncStore
from storage.labelled import export_labelled_set, read_labelled_set
from tests.support.bot import BotHarness, buttons, start_bot, stop_bot
from training.datasets import find_mnist
from training.flower_data import find_photo_folder
from training.retrain import RetrainError, RetrainOptions, run_retrain

pytestmark = pytest.mark.slow
IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the bot fixture lives for the module

PETS = ModelSpec(
    name="pets",
    kind=ModelKind.IMAGE_CLASSIFIER,
    labels=(Label("bird", {"ru": "птица"}), Label("dog", {"ru": "собака"})),  # a trainer sorts its labels
    mode="pets",
    preprocessing=flowers.PREPROCESSING_ID,
    display={"en": "pets", "ru": "питомцы"},
    dataset="pet_photos",
)
CATALOGUE = DEFAULT_CATALOGUE.with_model(PETS)
BASE_PER_LABEL = 24  # the image trainer wants at least 20 photos of each label
CHAT_PER_LABEL = 6  # further photos of each, sent to the bot
# ImageNet's classes by WordNet id (the file names' first part): the 118 dog breeds are one run of ids,
# the birds three (cock … great grey owl, black grouse … black swan, black stork … albatross).
DOG_IDS = [("n02085620", "n02113978")]
BIRD_IDS = [("n01514668", "n01622779"), ("n01795545", "n01860187"), ("n02002724", "n02058221")]
RU = 700_001


def _of_class(other_photos: Path, ranges: list[tuple[str, str]]) -> list[Path]:
    return sorted(
        p for p in other_photos.glob("n*_*.jpg") if any(lo <= p.name.split("_")[0] <= hi for lo, hi in ranges)
    )


@dataclass(frozen=True)
class Pets:
    settings: Settings
    store_dir: Path  # the model store with pets v1, as trained here
    chat: dict[str, list[Path]]  # label → photos that are not in the base data


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory, mnist_path: Path) -> Pets:
    """pet_photos/{dog,bird}/ from real photos, and pets v1 trained on it by the image trainer."""
    other = mnist_path.parent / "other_photos"
    found = {"dog": _of_class(other, DOG_IDS), "bird": _of_class(other, BIRD_IDS)}
    assert all(len(photos) >= BASE_PER_LABEL + CHAT_PER_LABEL for photos in found.values()), found
    tmp = tmp_path_factory.mktemp("pets")
    for label, photos in found.items():
        (tmp / "datasets" / "pet_photos" / label).mkdir(parents=True)
        for photo in photos[:BASE_PER_LABEL]:
            shutil.copy(photo, tmp / "datasets" / "pet_photos" / label / photo.name)
    settings = Settings(
        data_dir=tmp / "var",
        datasets=(tmp / "datasets", mnist_path.parent),
        retrain_min_contributors=1,
        retrain_max_user_share=1.0,
    )
    # Imported here: training.train_flowers imports TensorFlow, which every test worker would otherwise
    # load (~6 s of CPU) while collecting this module, marked slow and left out of `make test-fast`.
    from training.train_flowers import FlowerConfig, train_flowers

    config = FlowerConfig(
        validation_percent=20,
        test_percent=20,
        calibration_photos=12,
        evaluation_photos=12,
        package_photos=False,
    )
    trained = train_flowers(
        find_photo_folder(settings.datasets, settings.data_dir, PETS.dataset or ""),
        ModelStore(tmp / "store"),
        settings.data_dir / "cache" / "bottlenecks",
        config,
        mnist_file=find_mnist(settings.datasets, settings.data_dir),
        model_name=PETS.name,
    )
    assert trained.version is not None and trained.version.labels == ["bird", "dog"]
    chat = {
        label: photos[BASE_PER_LABEL : BASE_PER_LABEL + CHAT_PER_LABEL] for label, photos in found.items()
    }
    return Pets(settings, tmp / "store", chat)


@IN_MODULE_LOOP
async def test_the_classifier_serves_the_new_model_in_its_mode(pets: Pets) -> None:
    serving = replace(pets.settings, data_dir=pets.store_dir.parent / "serve")
    shutil.copytree(pets.store_dir, serving.models_dir)  # a copy: serving may write (e.g. a lite model)
    async with build_classifier(serving, catalogue=CATALOGUE, names=("pets",)) as classifier:
        answers = {
            label: [await classifier.classify(photo, PETS.mode) for photo in photos]
            for label, photos in pets.chat.items()
        }
    assert {a.model for found in answers.values() for a in found} == {"pets"}
    right = sum(a.label == label for label, found in answers.items() for a in found)
    assert right >= 2 * CHAT_PER_LABEL - 3, answers  # photos it never saw: most read right


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(pets: Pets) -> AsyncIterator[BotHarness]:
    harness = await start_bot(
        pets.settings.data_dir,
        pets.store_dir,
        names=("digits", "pets"),
        catalogue=CATALOGUE,
        datasets=pets.settings.datasets,
        retrain_min_contributors=1,
        retrain_max_user_share=1.0,
    )
    yield harness
    await stop_bot(harness)


@IN_MODULE_LOOP
async def test_use_switches_to_the_new_models_mode_and_answers_are_labelled_through_buttons(
    bot: BotHarness, pets: Pets
) -> None:
    user = bot.user(RU, "Аня", language_code="ru")
    switched = await bot.say(user, "/use pets")
    assert switched["text"] == text("ru", "mode_model", model="питомцы", labels="птица, собака")
    assert await bot.services.store.chat_mode(user) == "pets"

    answer = await bot.photo(user, pets.chat["dog"][0].read_bytes())
    assert answer["text"].split(" — ")[0] in ("собака", "птица"), answer["text"]
    shown = [caption for caption, _ in buttons(answer)]
    if shown == [text("ru", "button_correct"), text("ru", "button_wrong")]:
        wrong = text("ru", "button_wrong")
    else:  # unsure: it asks with the labels it offers, in Russian
        assert shown[0] == answer["text"].split(" — ")[0] and shown[-1] == text("ru", "button_other")
        wrong = text("ru", "button_other")
    _, picker = await bot.press(user, answer, dict(buttons(answer))[wrong])
    assert picker is not None
    assert [caption for caption, _ in buttons(picker)][:2] == ["птица", "собака"]
    await bot.press(user, picker, dict(buttons(picker))["собака"])

    captioned = await bot.photo(user, pets.chat["dog"][1].read_bytes(), caption="dog")
    assert "собака" in captioned["text"].split("\n\n")[-1]
    for label, photos in pets.chat.items():
        for photo in photos[2 if label == "dog" else 0 :]:
            await bot.photo(user, photo.read_bytes(), caption="птица" if label == "bird" else "dog")

    predictions = [await bot.services.store.get_prediction(i) for i in range(1, 2 * CHAT_PER_LABEL + 1)]
    assert {(p.model, p.mode) if p else None for p in predictions} == {("pets", "pets")}
    labelled = read_labelled_set(bot.settings.database_path, bot.settings.images_dir, "pets")
    assert sorted(e.label for e in labelled.examples) == ["bird"] * CHAT_PER_LABEL + ["dog"] * CHAT_PER_LABEL


@IN_MODULE_LOOP
async def test_the_new_models_labelled_photos_are_exported_and_it_is_retrained(
    bot: BotHarness, pets: Pets, tmp_path: Path
) -> None:
    labelled = read_labelled_set(bot.settings.database_path, bot.settings.images_dir, "pets")
    counts = export_labelled_set(labelled, tmp_path / "export" / "pets")
    assert counts == {"bird": CHAT_PER_LABEL, "dog": CHAT_PER_LABEL}
    for label in ("bird", "dog"):
        files = sorted((tmp_path / "export" / "pets" / label).iterdir())
        assert len(files) == CHAT_PER_LABEL and all(f.suffix == ".jpg" for f in files)

    outcome = run_retrain(
        retrain_settings(bot.settings),
        RetrainOptions(model="pets", force=True, epochs=40),
        catalogue=CATALOGUE,
    )
    assert outcome.model == "pets" and outcome.decision in ("promote", "reject")
    assert (outcome.serving_version, outcome.candidate_version) == (1, 2)
    assert "per label: bird 6, dog 6" in outcome.report.text, outcome.report.text
    candidate = ModelStore(bot.settings.models_dir).get("pets", 2)
    assert candidate.labels == ["bird", "dog"] and candidate.meta["parent"] == 1
    assert candidate.meta["data"]["chat_photos"] == 2 * CHAT_PER_LABEL
    with SyncStore(bot.settings.database_path, bot.settings.images_dir) as store:
        job = store.recent_retrain_jobs("pets")[0]
    assert job.status == ("succeeded" if outcome.decision == "promote" else "rejected")


def test_a_retrain_knows_the_models_of_the_catalogue_it_is_given(tmp_path: Path) -> None:
    """The retraining step is chosen by the catalogue entry's kind: without the entry, "pets" is unknown."""
    with pytest.raises(RetrainError, match=r"unknown model 'pets'; choose from digits, flowers$"):
        run_retrain(retrain_settings(Settings(data_dir=tmp_path)), RetrainOptions(model="pets"))
    assert not (tmp_path / "photobot.sqlite3").exists()  # refused before any job was claimed
