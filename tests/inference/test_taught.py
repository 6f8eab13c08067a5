"""The rules for a taught model's name and labels, and its catalogue entry."""

from __future__ import annotations

import pytest

from inference.catalogue import DEFAULT_CATALOGUE, ModelKind
from inference.taught import (
    Taught,
    TaughtError,
    check_labels,
    check_name,
    is_taught,
    takes_added_labels,
    with_added_labels,
    with_taught,
)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Pets", "teach_bad_name"),
        ("1pets", "teach_bad_name"),
        ("a" * 21, "teach_bad_name"),
        ("pets!", "teach_bad_name"),
        ("flowers", "teach_name_taken"),
        ("flower", "teach_name_taken"),  # a chat mode
        ("auto", "teach_name_taken"),
        ("gone", "teach_name_taken"),  # a deleted model's name
        ("help", "teach_name_command"),  # `/use help` and `/retrain help` would read as /help
        ("delmodel", "teach_name_command"),
        ("none", "teach_name_reserved"),  # what photos of none of a model's labels are filed under
    ],
)
def test_bad_names_are_refused_with_a_reason(name: str, key: str) -> None:
    with pytest.raises(TaughtError) as refused:
        check_name(name, DEFAULT_CATALOGUE, taken=["gone"])
    assert refused.value.key == key


def test_a_good_name_and_labels_pass_normalised() -> None:
    assert check_name("my_pets2", DEFAULT_CATALOGUE) == "my_pets2"
    assert check_labels(["Dog", "cat_2", "sea-horse"]) == ["dog", "cat_2", "sea-horse"]


@pytest.mark.parametrize(
    ("labels", "key"),
    [
        (["dog"], "teach_label_count"),
        ([f"l{i}" for i in range(51)], "teach_label_count"),
        (["dog", "Dog"], "teach_label_twice"),
        (["dog", "x" * 31], "teach_label_too_long"),
        (["dog", "12"], "teach_bad_label"),  # a number caption is a digit
        (["dog", "a:b"], "teach_bad_label"),
        (["dog", "собака"], "teach_bad_label"),  # labels travel in callback data: ASCII
        (["dog", "--"], "teach_bad_label"),  # no letter: nobody can tell such labels apart
        (["dog", "__"], "teach_bad_label"),
        (["dog", "1-2"], "teach_bad_label"),
        (["dog", "not_pets"], "teach_reserved_label"),  # the label of a photo of none of them
        (["dog", "not_a_digit"], "teach_reserved_label"),
        (["dog", "None"], "teach_reserved_label"),  # `photobot evaluate`'s folder of photos of none
    ],
)
def test_bad_labels_are_refused_with_a_reason(labels: list[str], key: str) -> None:
    with pytest.raises(TaughtError) as refused:
        check_labels(labels)
    assert refused.value.key == key


def test_a_label_a_caption_already_means_is_refused() -> None:
    flowers = DEFAULT_CATALOGUE["flowers"]
    with pytest.raises(TaughtError) as refused:
        check_labels(["Rose"], model=flowers)  # "rose" is a caption of roses
    assert (refused.value.key, refused.value.values) == (
        "teach_label_named",
        {"label": "rose", "existing": "roses"},
    )
    with pytest.raises(TaughtError) as refused:
        check_labels(["tulips"], model=flowers)
    assert refused.value.key == "teach_label_exists"  # given once, and already there
    assert check_labels(["lavender"], model=flowers) == ["lavender"]


def test_taught_models_join_the_catalogue_as_image_classifiers_in_their_own_mode() -> None:
    catalogue = with_taught(DEFAULT_CATALOGUE, [Taught("pets", [("dog", {"ru": "собака"}), ("cat", {})])])
    spec = catalogue["pets"]
    assert spec.kind == ModelKind.IMAGE_CLASSIFIER and spec.mode == "pets" and is_taught(spec)
    assert not is_taught(catalogue["flowers"]) and not is_taught(catalogue["digits"])
    assert catalogue.for_mode("pets") is spec and spec.shown_label("dog", "ru") == "собака"
    assert catalogue.find_caption("собака") == ("pets", "dog")
    assert catalogue.find_caption("pets: Cat") == ("pets", "cat")
    assert catalogue.find_caption("flowers: roses") == ("flowers", "roses")
    assert catalogue.find_caption("pets: roses") is None  # not one of pets' labels
    assert catalogue.find_caption("roses") == ("flowers", "roses")


def test_a_label_added_to_the_flowers_joins_captions_and_follows_whatever_version_serves() -> None:
    five = DEFAULT_CATALOGUE["flowers"].label_names
    catalogue = with_added_labels(DEFAULT_CATALOGUE, [("flowers", "lavender", False)])
    flowers = catalogue["flowers"]
    assert flowers.label_names == (*five, "lavender") and flowers.added == ("lavender",)
    assert (
        catalogue.find_caption("lavender")
        == catalogue.find_caption("flowers: Lavender")
        == (
            "flowers",
            "lavender",
        )
    )
    assert flowers.shown_label("roses", "ru") == "розы"  # the built-in labels keep their translations
    # A version that learned it, or one that did not (a rollback): the label stays either way.
    assert catalogue.with_labels("flowers", [*five, "lavender"]) is catalogue
    assert catalogue.with_labels("flowers", five)["flowers"].label_names == (*five, "lavender")
    assert takes_added_labels(flowers) and not takes_added_labels(catalogue["digits"])
    assert "lavender" not in DEFAULT_CATALOGUE["flowers"].label_names


def test_a_removed_label_leaves_even_while_a_version_that_knows_it_serves() -> None:
    five = DEFAULT_CATALOGUE["flowers"].label_names
    added = with_added_labels(DEFAULT_CATALOGUE, [("flowers", "lavender", False), ("flowers", "iris", False)])
    catalogue = with_added_labels(added, [("flowers", "lavender", True), ("flowers", "iris", False)])
    assert catalogue["flowers"].label_names == (*five, "iris")
    serving = catalogue.with_labels("flowers", [*five, "lavender"])  # the version learned it before
    assert serving["flowers"].label_names == (*five, "iris")
    assert serving.find_caption("lavender") is None
    assert serving["flowers"].labels_for([*five, "lavender"]) == (*five, "iris")  # what a retrain learns
    again = with_added_labels(serving, [("flowers", "iris", False), ("flowers", "lavender", False)])
    assert again["flowers"].label_names == (*five, "iris", "lavender")
