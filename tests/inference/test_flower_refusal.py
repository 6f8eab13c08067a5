"""Real photos that are neither a digit nor a flower, through the shipped flower model as served.

The photos ship with the installed packages (scikit-image's samples, matplotlib's Grace Hopper): portraits,
animals, objects, documents, the sky, a medical image. No portrait may ever be answered `ok`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import matplotlib
import pytest
import skimage

from inference.classifier import Classifier, seed_model
from inference.engine import EngineConfig
from inference.model_store import ModelStore
from training.flower_model import seed_flower_model

pytestmark = pytest.mark.slow

SAMPLES = Path(skimage.__file__).parent / "data"
PORTRAITS = [
    SAMPLES / "astronaut.png",
    SAMPLES / "camera.png",
    Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
]
REFUSED = {
    "animal": [SAMPLES / "chelsea.png", SAMPLES / "horse.png"],
    "object": [SAMPLES / "coffee.png", SAMPLES / "coins.png", SAMPLES / "motorcycle_left.png"],
    "document": [SAMPLES / "page.png", SAMPLES / "text.png"],
}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory):
    store = ModelStore(tmp_path_factory.mktemp("models"))
    seed_flower_model(store)
    seed_model(store, "digits")
    engine = EngineConfig(reload_poll_s=0, runtime="keras", pool="thread", workers=2)
    loop = asyncio.new_event_loop()
    serving = Classifier(store, engine)
    loop.run_until_complete(serving.start())
    yield lambda path, mode: loop.run_until_complete(serving.classify(path.read_bytes(), mode))
    loop.run_until_complete(serving.close())
    loop.close()


@pytest.mark.parametrize("mode", ["flower", "auto"])
@pytest.mark.parametrize("photo", PORTRAITS, ids=lambda p: p.stem)
def test_no_portrait_is_answered_ok(classifier, photo: Path, mode: str) -> None:
    assert classifier(photo, mode).status != "ok"


@pytest.mark.parametrize("mode", ["flower", "auto"])
@pytest.mark.parametrize("photo", [p for photos in REFUSED.values() for p in photos], ids=lambda p: p.stem)
def test_animals_objects_and_documents_are_refused(classifier, photo: Path, mode: str) -> None:
    answer = classifier(photo, mode)
    assert (answer.status, answer.label) == ("not_recognized", None)


def test_a_medical_image_is_not_answered_ok(classifier) -> None:
    """The retina scan, once "roses 99%": far from every training photo of roses."""
    assert classifier(SAMPLES / "retina.jpg", "flower").status != "ok"


def test_flower_photos_of_the_held_out_split_are_answered_right(classifier, flowers_path: Path) -> None:
    from training.flower_data import list_photos, split_of

    test = [p for p in list_photos(flowers_path).photos if split_of(p.digest, 10.0, 10.0) == "test"][:60]
    right = sum(classifier(p.path, "flower").label == p.label for p in test)
    assert right / len(test) >= 0.88  # 92% on the whole split (302 photos); 60 of them here


SCIENCE_AND_SKY = {
    "scientific": [SAMPLES / "cell.png", SAMPLES / "ihc.png"],
    "sky": [SAMPLES / "moon.png", SAMPLES / "rocket.jpg", SAMPLES / "hubble_deep_field.jpg"],
}


@pytest.mark.parametrize(
    ("photo", "mode"),
    [
        pytest.param(p, mode, id=f"{p.stem}-{mode}")
        for photos in SCIENCE_AND_SKY.values()
        for p in photos
        for mode in ("flower", "auto")
    ],
)
def test_scientific_images_and_the_sky_are_not_answered_ok(classifier, photo: Path, mode: str) -> None:
    # in auto mode the digit reader finds no marks in them, or marks the digit-ness test turns away, or
    # (a rocket or the moon against a plain sky) marks only doubtfully digits, which are asked about
    assert classifier(photo, mode).status != "ok"


@pytest.fixture(scope="module")
def faces_in_auto_mode(classifier, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The auto-mode status of each of LFW's 200 faces (low-quality grey portraits): the digit reader
    finds marks on their plain backgrounds, which the digit model alone read as "8" or "1" with
    confidence; marks only doubtfully digit-like on a photo the ImageNet head sees no page in are no
    digits (`router.weigh`), and a photograph's tones, which stray from one smooth page, make even
    surely digit-like marks only a question (`router.Scene.paper_like`)."""
    from training.non_flowers import package_recipes

    folder = tmp_path_factory.mktemp("lfw")
    faces = [r for r in package_recipes(crops_per_photo=0) if r.kind.startswith("lfw-")]
    assert len(faces) == 200
    statuses = []
    for recipe in faces:
        path = folder / f"{recipe.kind}.png"
        recipe.make().save(path)
        statuses.append(classifier(path, "auto").status)
    return statuses


def test_faces_are_never_answered_ok_in_auto_mode(faces_in_auto_mode: list[str]) -> None:
    assert faces_in_auto_mode.count("ok") == 0


MPL_SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
GRAPHICS = [MPL_SAMPLES / "logo2.png", MPL_SAMPLES / "Minduka_Present_Blue_Pack.png", SAMPLES / "logo.png"]


@pytest.mark.parametrize("photo", GRAPHICS, ids=lambda p: p.stem)
def test_logos_and_packaging_are_refused_in_auto_mode(classifier, photo: Path) -> None:
    answer = classifier(photo, "auto")
    assert (answer.status, answer.label) == ("not_recognized", None)


def test_a_screenshot_of_a_chart_is_refused_in_auto_mode(classifier, tmp_path: Path) -> None:
    """A plot as matplotlib draws it on screen, with its axes' digits: text and figures, not a
    handwritten digit on paper."""
    import matplotlib.pyplot as plt
    import numpy as np

    prices = np.load(MPL_SAMPLES / "goog.npz")["price_data"]["adj_close"][-250:]
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    axes.plot(prices)
    axes.set(title="GOOG adjusted close", xlabel="day", ylabel="price")
    figure.savefig(tmp_path / "chart.png")
    plt.close(figure)
    answer = classifier(tmp_path / "chart.png", "auto")
    assert (answer.status, answer.label) == ("not_recognized", None)


def test_other_writers_digits_with_doubtful_marks_are_still_read_in_auto_mode(
    classifier, tmp_path: Path
) -> None:
    """UCI's digits (13 writers of NIST's forms, none of them MNIST's) as phone photos: about 1 in 40
    has marks the digit-ness net only doubts, which makes auto mode hear the ImageNet head too; it sees
    a page in them, so they are read as in `/digit` mode (a blurry face, which it does not, is refused)."""
    import numpy as np

    from benchmarks.digit_sources import render_photos, stroke_image, uci_digits
    from inference import digits, router
    from inference.decode import decode_image

    images, labels = uci_digits()
    photos = render_photos(np.stack([stroke_image(cells) for cells in images[:600]]), labels[:600], seed=3)
    doubtful = []
    for index, (data, label) in enumerate(photos):
        image = decode_image(data, max_bytes=1 << 25, max_pixels=1 << 26, target_size=256)
        found = digits.read_digits(image)
        scene = router.look(image, found.found, found.model_input() if found.found else None)
        if router.route(scene) == "check" and scene.paper_like:  # a page, but marks only doubtfully digits
            path = tmp_path / f"{index}.jpg"
            path.write_bytes(data)
            doubtful.append((path, label))
    assert len(doubtful) >= 4  # measured: 6 of 600
    in_digit_mode = [classifier(path, "digit").label == label for path, label in doubtful]
    in_auto_mode = [classifier(path, "auto").label == label for path, label in doubtful]
    assert sum(in_auto_mode) >= sum(in_digit_mode) >= len(doubtful) // 2
