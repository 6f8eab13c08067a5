"""A taught model's head (`training.taught_head`): unit features beside the ImageNet network's √p, the
balance chosen by cross-validation on the taught photos, the refusal by the nearest taught photo (and
its mirror image) in features and ImageNet view, and the served model computing the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.teach import animal_photos, other_photos_of_none
from inference.decode import decode_image
from inference.flowers import RESIZE_SHORTER, flower_input
from training.effnet_lite0 import imagenet_head
from training.numpy_fit import softmax
from training.taught_head import (
    REJECT_SPREAD,
    UNSURE_QUANTILE,
    ImagenetHead,
    TaughtPhotos,
    choose_weight,
    cross_validate,
    embed,
    fit_softmax,
    refusal_score,
    refusal_threshold,
)


def _pixels(paths: list[Path]) -> np.ndarray:
    images = [
        decode_image(p.read_bytes(), max_bytes=20_000_000, max_pixels=50_000_000, target_size=RESIZE_SHORTER)
        for p in paths
    ]
    return np.stack([flower_input(image) for image in images]).astype(np.float32)


def _mirrored(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[:, :, ::-1])


@pytest.fixture(scope="module")
def imagenet() -> ImagenetHead:
    return ImagenetHead(*imagenet_head())


def test_the_fit_is_deterministic_and_separates_what_it_was_given() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 12)
    x = rng.normal(0, 1, (3, 20))[y] + rng.normal(0, 0.5, (len(y), 20))
    kernel, bias, losses = fit_softmax(x, y, 3)
    again = fit_softmax(x, y, 3)
    assert np.array_equal(kernel, again[0]) and np.array_equal(bias, again[1])
    assert np.mean((x @ kernel + bias).argmax(axis=1) == y) == 1.0 and losses[-1] < losses[0] / 5


def test_cross_validation_answers_every_photo_from_heads_that_never_saw_it() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 10)
    centres = rng.normal(0, 1, (3, 20))
    x = centres[y] + rng.normal(0, 0.3, (len(y), 20))
    held = cross_validate([x], y, 3, repeats=4)
    assert held.answers.shape == y.shape and held.right == 1.0 and np.array_equal(held.answers, y)
    assert np.all((held.confidence() > 1 / 3) & (held.confidence() < 1.0))
    assert np.all(held.confidence(0.5) > held.confidence())  # a lower temperature: surer
    # One photo of label 0 drawn at label 1's centre: seen, a head learns it; held out, none can.
    odd = x.copy()
    odd[0] = centres[1] + rng.normal(0, 0.3, 20)
    crossed = cross_validate([odd], y, 3, repeats=4)
    assert crossed.answers[0] == 1 and crossed.right <= 29 / 30  # wrong in every fold it is held out of
    assert np.mean(crossed.answers == y) >= 0.9  # the rest mostly right (a neighbour of it may not be)
    kernel, bias, _ = fit_softmax(odd, y, 3)
    assert (odd[0] @ kernel + bias).argmax() == 0


def test_the_joined_features_are_unit_vectors_whatever_the_imagenet_weight(imagenet: ImagenetHead) -> None:
    features = np.random.default_rng(1).gamma(1.0, 0.5, (5, 1280))  # backbone features are ReLU6 ≥ 0
    for weight in (0.0, 0.5, 1.0, 3.0):
        x = embed(features, imagenet, weight)
        assert x.shape == (5, 2280) and np.allclose(np.linalg.norm(x, axis=1), 1.0)
    root = imagenet.root_probabilities(features)
    probabilities = softmax(features @ imagenet.kernel + imagenet.bias)
    assert np.allclose(root**2, probabilities, atol=1e-6)
    flat = imagenet.root_probabilities(features, 4.0)  # the refusal's view: p^(1/4), unit length
    assert np.allclose(flat / flat[:, :1], (probabilities / probabilities[:, :1]) ** 0.25)
    assert np.allclose(np.linalg.norm(flat, axis=1), 1.0)
    assert not embed(features, imagenet, 0.0)[:, 1280:].any()


@pytest.mark.slow
def test_cross_validation_takes_the_imagenet_half_for_animals_and_leaves_it_for_flowers(
    flower_backbone, imagenet: ImagenetHead, mnist_path: Path, flowers_path: Path
) -> None:
    """Four broad animal categories (a dozen breeds or species each) are told apart better with what
    the ImageNet network sees; five flowers, which it sees as a few plant classes, without it."""
    animals = animal_photos(mnist_path.parent / "other_photos")
    flowers = {p.name: sorted(p.glob("*.jpg"))[:12] for p in sorted(flowers_path.iterdir()) if p.is_dir()}
    chosen = {}
    for name, photos in (("animals", {k: v[:12] for k, v in animals.items()}), ("flowers", flowers)):
        paths = [p for group in photos.values() for p in group]
        y = np.repeat(np.arange(len(photos)), [len(group) for group in photos.values()])
        features = np.asarray(flower_backbone.predict_on_batch(_pixels(paths)))
        chosen[name], scores = choose_weight(features, y, len(photos), imagenet)
        assert set(scores) == {0.0, 1.0} and all(0.5 < a <= 1.0 for a in scores.values())
    assert chosen == {"animals": 1.0, "flowers": 0.0}


@pytest.mark.slow
def test_the_served_model_answers_as_the_fitted_head_and_loads_safely(
    flower_backbone, imagenet: ImagenetHead, mnist_path: Path, tmp_path: Path
) -> None:
    import keras

    from training.flower_model import FlowerHead
    from training.ood import OodParams
    from training.taught_head import assemble_taught_model

    animals = animal_photos(mnist_path.parent / "other_photos")
    taught = animals["dog"][:12] + animals["bird"][:12]
    asked = animals["dog"][12:14] + animals["bird"][12:14]  # another breed or species each
    features = np.asarray(flower_backbone.predict_on_batch(_pixels(taught)))
    mirrored = np.asarray(flower_backbone.predict_on_batch(_mirrored(_pixels(taught))))
    y = np.repeat([0, 1], 12)
    kernel, bias, _ = fit_softmax(embed(features, imagenet, 1.0), y, 2)
    photos = TaughtPhotos.of([features, mirrored], imagenet)
    ood = OodParams(photos.unit, np.eye(1280, 1, dtype=np.float32), np.ones(1, np.float32), 1.0)
    head = FlowerHead(kernel, bias, ood)
    model = assemble_taught_model(flower_backbone, head, imagenet, 1.0, photos)
    model.save(tmp_path / "model.keras")
    served = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)

    pixels = _pixels(asked)
    probabilities, distances = (np.asarray(o) for o in served.predict_on_batch(pixels))
    seen = np.asarray(flower_backbone.predict_on_batch(pixels))
    expected = softmax(embed(seen, imagenet, 1.0) @ kernel + bias)
    assert np.allclose(probabilities, expected, atol=1e-4)
    assert probabilities.argmax(axis=1).tolist() == [0, 0, 1, 1]
    assert distances.shape == (4, 1)  # one distance per photo, whatever the number taught
    assert np.allclose(distances[:, 0], photos.distance(seen, imagenet), atol=1e-4)
    assert np.allclose(photos.distance(features, imagenet), 0.0, atol=1e-5)  # a taught photo itself


def test_the_refusal_threshold_lies_a_spread_beyond_the_taught_photos_mean_and_unsure_below_it() -> None:
    scores = np.linspace(0.0, 1.0, 41)
    unsure, reject = refusal_threshold(scores)
    assert reject == pytest.approx(0.5 + REJECT_SPREAD * scores.std())
    assert reject > 1.0  # beyond every one of these 41, evenly spread
    assert unsure == pytest.approx(np.quantile(scores, UNSURE_QUANTILE)) and unsure < reject
    assert refusal_threshold(np.full(5, 0.3)) == (pytest.approx(0.3), pytest.approx(0.3))


def test_the_refusal_threshold_does_not_climb_with_the_number_of_taught_photos() -> None:
    """More photos of the same labels sharpen the estimate; they do not move it. The highest score
    of N photos climbs with N, so a threshold made of it refused less the more a model was taught."""
    rng = np.random.default_rng(3)
    thresholds = {
        n: np.mean([refusal_threshold(rng.normal(0.5, 0.2, n))[1] for _ in range(400)]) for n in (40, 400)
    }
    assert thresholds[400] == pytest.approx(thresholds[40], abs=0.02)  # a small sample's SD: a little low
    highest = {n: np.mean([rng.normal(0.5, 0.2, n).max() for _ in range(400)]) for n in (40, 400)}
    assert highest[400] > highest[40] + 0.1  # what the rule used to stand on


def test_a_far_photo_the_head_is_unsure_of_scores_higher_than_a_far_photo_it_is_sure_of() -> None:
    distance = np.array([1.3, 1.3, 0.2])
    score = refusal_score(distance, np.array([0.4, 0.95, 0.4]), weight=2.0)
    assert score.tolist() == pytest.approx([0.5, -0.6, -0.6])
    assert refusal_score(distance, np.array([0.4, 0.95, 0.4]), weight=0.0).tolist() == distance.tolist()


@pytest.mark.slow
def test_the_refusal_calibrated_on_taught_photos_alone_keeps_new_animals_and_refuses_other_photos(
    flower_backbone, imagenet: ImagenetHead, mnist_path: Path
) -> None:
    """Four animal categories, a dozen real photos each (and their mirror images): the rule is placed
    by the taught photos held out (the nearest other photo, the confidence of heads that never saw
    them) and, on photos it never saw, keeps the new breeds and species and refuses photos of none of
    them at least as the nearest-photo distance alone with its old rule (the farthest taught photo)."""
    other = mnist_path.parent / "other_photos"
    animals = animal_photos(other)
    taught = [p for group in animals.values() for p in group[:12]]
    unseen = [p for group in animals.values() for p in group[12:15]]  # another breed or species each
    none = other_photos_of_none(other)[::10]  # 35 photos of no animal of the four
    y, y_unseen = np.repeat(np.arange(4), 12), np.repeat(np.arange(4), 3)
    features = np.asarray(flower_backbone.predict_on_batch(_pixels(taught)))
    mirrored = np.asarray(flower_backbone.predict_on_batch(_mirrored(_pixels(taught))))
    views = [embed(features, imagenet, 1.0), embed(mirrored, imagenet, 1.0)]
    kernel, bias, _ = fit_softmax(np.vstack(views), np.tile(y, 2), 4)
    confidence = cross_validate(views, y, 4).confidence()
    assert np.all(confidence < softmax(views[0] @ kernel + bias).max(axis=1))  # held out: less sure
    photos = TaughtPhotos.of([features, mirrored], imagenet)
    held_out = photos.distance(features, imagenet, own=np.arange(len(y)))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    old_nearest = (2.0 - 2.0 * unit @ unit.T + 4.0 * np.eye(len(y))).min(axis=1)

    def asked(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        seen = np.asarray(flower_backbone.predict_on_batch(_pixels(paths)))
        probabilities = softmax(embed(seen, imagenet, 1.0) @ kernel + bias)
        old = (2.0 - 2.0 * (seen / np.linalg.norm(seen, axis=1, keepdims=True)) @ unit.T).min(axis=1)
        return photos.distance(seen, imagenet), old, probabilities.max(axis=1), probabilities.argmax(axis=1)

    animal, animal_old, sure, answer = asked(unseen)
    other_distance, other_old, other_sure, _ = asked(none)
    reject = refusal_threshold(refusal_score(held_out, confidence))[1]
    kept = (answer == y_unseen) & (refusal_score(animal, sure) <= reject)
    refused = refusal_score(other_distance, other_sure) > reject
    old_kept = (answer == y_unseen) & (animal_old <= old_nearest.max())
    old_refused = other_old > old_nearest.max()
    assert kept.sum() >= max(old_kept.sum(), 11), (kept.sum(), old_kept.sum())
    assert refused.sum() >= max(old_refused.sum(), 24), (refused.sum(), old_refused.sum())


@pytest.mark.slow
def test_the_refusal_of_other_photos_does_not_weaken_as_more_photos_are_taught(
    flower_backbone, imagenet: ImagenetHead, mnist_path: Path, flowers_path: Path
) -> None:
    """Five flowers taught from the chat, 12 real photos each and then 24 (the first 12 among them): the
    threshold does not climb, and real photos of other things (every fifth of `other_photos`: none is
    a flower) are refused no less often. The old threshold, the highest held-out score + 0.2 of their
    standard deviation, climbs with the photos (on these, from 24 per label on, it let through about a
    third of the other photos it had refused at 12)."""
    flowers = [sorted(p.glob("*.jpg"))[:24] for p in sorted(flowers_path.iterdir()) if p.is_dir()]
    others = sorted((mnist_path.parent / "other_photos").glob("*.jpg"))[::5]
    taught = [p for photos in flowers for p in photos]
    pixels = _pixels(taught)
    features = np.asarray(flower_backbone.predict_on_batch(pixels))
    mirrored = np.asarray(flower_backbone.predict_on_batch(_mirrored(pixels)))
    other = np.asarray(flower_backbone.predict_on_batch(_pixels(others)))
    label = np.repeat(np.arange(len(flowers)), 24)
    index = np.arange(len(taught)) % 24

    def threshold_and_refused(per_label: int) -> tuple[float, float, float]:
        mine = index < per_label
        x, y = features[mine], label[mine]
        views = [embed(x, imagenet, 0.0), embed(mirrored[mine], imagenet, 0.0)]  # w = 0 for flowers
        kernel, bias, _ = fit_softmax(np.vstack(views), np.tile(y, 2), len(flowers))
        photos = TaughtPhotos.of([x, mirrored[mine]], imagenet)
        held_out = refusal_score(
            photos.distance(x, imagenet, own=np.arange(len(y))),
            cross_validate(
                views, y, len(flowers), repeats=3
            ).confidence(),  # the job averages more; 3 do here
        )
        sure = softmax(embed(other, imagenet, 0.0) @ kernel + bias).max(axis=1)
        scores = refusal_score(photos.distance(other, imagenet), sure)
        reject = refusal_threshold(held_out)[1]
        return reject, float(np.mean(scores > reject)), float(held_out.max() + 0.2 * held_out.std())

    reject_12, refused_12, old_12 = threshold_and_refused(12)
    reject_24, refused_24, old_24 = threshold_and_refused(24)
    assert reject_24 <= reject_12, (reject_12, reject_24)
    assert refused_24 >= refused_12 - 1.0 / len(others), (refused_12, refused_24)  # a photo either way
    assert refused_24 >= 0.8, refused_24
    assert old_24 > old_12 + 0.02, (old_12, old_24)  # what the rule used to stand on climbs


def test_a_taught_version_answers_by_the_confidence_weighted_score() -> None:
    from inference.flowers import flowers_prediction
    from inference.model_store import ModelVersion

    ood = {"unsure_above": 0.2, "reject_above": 0.3, "min_confidence": 0.3, "confidence_weight": 2.0}
    version = ModelVersion("pets", 1, Path("unused"), meta={"labels": ["dog", "cat"], "ood": ood})
    far = np.array([1.4, 1.5])  # squared distances 2 − 2·cos to two taught photos
    sure, between, hesitant = np.array([0.65, 0.35]), np.array([0.58, 0.42]), np.array([0.52, 0.48])
    assert flowers_prediction([sure, far], version).status == "ok"  # 1.4 − 1.3 = 0.1
    assert flowers_prediction([between, far], version).status == "unsure"  # 1.4 − 1.16 = 0.24
    refused = flowers_prediction([hesitant, far], version)  # 1.4 − 1.04 = 0.36
    assert (refused.status, refused.label) == ("not_recognized", None)
    distance_alone = ModelVersion(
        "pets", 1, Path("unused"), meta={"labels": ["dog", "cat"], "ood": ood | {"confidence_weight": 0}}
    )
    assert flowers_prediction([sure, far], distance_alone).status == "not_recognized"


def test_a_taught_version_shows_calibrated_percentages_and_refuses_by_its_own() -> None:
    """`meta["calibration"]`: the percentages shown are softmax(logits / T); the refusal's score and the
    `unsure` line read the model's own probabilities, on which they were placed."""
    from inference.flowers import flowers_prediction
    from inference.model_store import ModelVersion

    ood = {"unsure_above": 0.2, "reject_above": 0.3, "min_confidence": 0.3, "confidence_weight": 2.0}
    meta = {"labels": ["dog", "cat"], "ood": ood}
    plain = ModelVersion("pets", 1, Path("unused"), meta=meta)
    sharper = ModelVersion("pets", 2, Path("unused"), meta=meta | {"calibration": {"temperature": 0.5}})
    far = np.array([1.4, 1.5])
    for probabilities in (np.array([0.65, 0.35]), np.array([0.58, 0.42]), np.array([0.52, 0.48])):
        as_given, shown = (
            flowers_prediction([probabilities, far], plain),
            flowers_prediction([probabilities, far], sharper),
        )
        assert (shown.status, shown.label) == (as_given.status, as_given.label)
        expected = probabilities**2 / np.sum(probabilities**2)  # logits / 0.5
        assert [p for _, p in shown.top] == pytest.approx(sorted(expected, reverse=True))
        if shown.label is not None:
            assert shown.confidence == pytest.approx(expected.max())
            assert shown.confidence > as_given.confidence
