"""The model catalogue: names, labels in two languages, captions, modes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, Label, ModelKind, ModelSpec

BIRDS = ModelSpec(
    name="birds",
    kind=ModelKind.IMAGE_CLASSIFIER,
    labels=(Label("owl", {"ru": "сова"}), Label("kite", {"ru": "коршун"})),
    mode="birds",
    preprocessing=DEFAULT_CATALOGUE["flowers"].preprocessing,
)


def test_the_default_catalogue_lists_digits_then_flowers_with_their_modes() -> None:
    assert DEFAULT_CATALOGUE.names == ("digits", "flowers")
    assert DEFAULT_CATALOGUE.modes == ("auto", "digit", "flower")
    assert DEFAULT_CATALOGUE.for_mode("digit") is DEFAULT_CATALOGUE["digits"]
    assert DEFAULT_CATALOGUE.for_mode("auto") is None
    assert DEFAULT_CATALOGUE["digits"].label_names == tuple("0123456789")


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("roses", ("flowers", "roses")),
        ("Rose", ("flowers", "roses")),
        ("розы", ("flowers", "roses")),
        ("Тюльпан", ("flowers", "tulips")),
        ("7", ("digits", "7")),
        ("семь", ("digits", "7")),
        ("seven.", ("digits", "7")),
        ("roses 🌹", ("flowers", "roses")),
        ("🌻 Sunflowers!", ("flowers", "sunflowers")),
        ("tulips ❤️", ("flowers", "tulips")),  # a heart with its variation selector
        ("flowers: daisy 👍🏽", ("flowers", "daisy")),  # a thumb with its skin tone
        ("roses?", None),  # a question, not a label
        ("7\ufe0f\u20e3", ("digits", "7")),  # the keycap emoji 7️⃣
        ("cats", None),
        ("", None),
        (None, None),
    ],
)
def test_a_caption_names_a_label_in_either_language(caption, expected) -> None:
    assert DEFAULT_CATALOGUE.find_caption(caption) == expected


def test_labels_are_shown_in_the_users_language_and_numbers_as_they_are() -> None:
    flowers = DEFAULT_CATALOGUE["flowers"]
    assert flowers.shown_label("dandelion", "ru") == "одуванчик"
    assert flowers.shown_label("dandelion", "en") == "dandelion"
    assert DEFAULT_CATALOGUE["digits"].shown_label("2026", "ru") == "2026"


def test_a_model_added_to_the_catalogue_is_found_by_name_mode_and_caption() -> None:
    catalogue = DEFAULT_CATALOGUE.with_model(BIRDS)
    assert catalogue.names == ("digits", "flowers", "birds")
    assert catalogue.for_mode("birds") is BIRDS
    assert catalogue.find_caption("сова") == ("birds", "owl")
    assert "birds" not in DEFAULT_CATALOGUE  # the default is left as it was


def test_a_label_of_several_models_is_found_in_each_and_model_colon_label_picks_one() -> None:
    owls = replace(BIRDS, name="owls", labels=(Label("owl"), Label("barn")), mode="owls")
    catalogue = DEFAULT_CATALOGUE.with_model(BIRDS).with_model(owls)
    assert catalogue.find_captions("Owl") == (("birds", "owl"), ("owls", "owl"))
    assert catalogue.find_captions("owls: owl") == (("owls", "owl"),)
    assert catalogue.find_captions("kite") == (("birds", "kite"),)
    assert catalogue.find_captions("2026") == (("digits", "2026"),)


def test_a_caption_spelled_as_a_label_names_it_before_one_it_is_the_singular_of() -> None:
    flowers = DEFAULT_CATALOGUE["flowers"]
    assert flowers.label_named("rose") == "roses"
    with_rose = flowers.with_label_names([*flowers.label_names, "rose"])
    assert (with_rose.label_named("rose"), with_rose.label_named("roses")) == ("rose", "roses")


def test_a_serving_versions_labels_replace_the_entrys_and_keep_known_translations() -> None:
    catalogue = DEFAULT_CATALOGUE.with_labels("flowers", ["daisy", "lavender"])
    flowers = catalogue["flowers"]
    assert flowers.label_names == ("daisy", "lavender")
    assert flowers.shown_label("daisy", "ru") == "ромашка"
    assert catalogue.find_caption("lavender") == ("flowers", "lavender")
    assert (
        DEFAULT_CATALOGUE.with_labels("flowers", DEFAULT_CATALOGUE["flowers"].label_names)
        is DEFAULT_CATALOGUE
    )


def test_two_models_cannot_share_a_chat_mode() -> None:
    with pytest.raises(ValueError, match="unique"):
        Catalogue([DEFAULT_CATALOGUE["digits"], ModelSpec("x", ModelKind.DIGIT_READER, (), "digit", "p")])


def test_a_number_names_a_label_of_the_digit_reader_and_nothing_else_does() -> None:
    assert DEFAULT_CATALOGUE.find_caption("2026") == ("digits", "2026")
    assert DEFAULT_CATALOGUE.knows("digits", "2026")
    assert not DEFAULT_CATALOGUE.knows("digits", "²")
    assert not DEFAULT_CATALOGUE.knows("flowers", "2026")
    assert DEFAULT_CATALOGUE.find_caption("1234567890123") is None  # 13 digits: no number we read
