"""The model catalogue: every model PhotoBot knows, in one place.

A model's entry says what it is called, which labels it has (with their names in each language and
the captions accepted for them), what kind of model it is, which chat mode sends every photo to it,
how photos are prepared for it, where its shipped default lives, which trainer builds it and from
which folder of labelled photos.
Keyboards, captions, routing, `/models`, `/retrain`, export, evaluate and the command line's choices
all read it, so adding a model is adding an entry:

    catalogue = DEFAULT_CATALOGUE.with_model(ModelSpec(name="birds", kind=ModelKind.IMAGE_CLASSIFIER, …))

The serving version's meta.json may carry its own label list (a retrained model can learn a label):
`with_labels` returns a catalogue whose entry follows it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from inference import digits, flowers

MAX_NUMBER_DIGITS = 12  # the longest number accepted as a caption or a correction


class ModelKind(StrEnum):
    """How a model turns a photo into an answer."""

    DIGIT_READER = "digit_reader"  # finds handwritten digits, frames each as MNIST does, reads numbers
    IMAGE_CLASSIFIER = "image_classifier"  # a head on the shared pretrained backbone, with a refusal


@dataclass(frozen=True)
class Label:
    """One label: its name as the model and the database know it, and how people see and write it."""

    name: str
    display: Mapping[str, str] = field(default_factory=dict)  # language → shown name (default: `name`)
    aliases: tuple[str, ...] = ()  # further captions accepted for it, in any language

    def shown(self, language: str) -> str:
        return self.display.get(language, self.name)

    def spellings(self) -> Iterator[str]:
        """Every caption that names this label, normalised (see `normalise`)."""
        for word in (self.name, *self.display.values(), *self.aliases):
            yield normalise(word)


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalogue."""

    name: str  # the model store's folder, the database's `model` column, the command line's choice
    kind: ModelKind
    labels: tuple[Label, ...]
    mode: str  # the chat mode that sends every photo to this model (`/digit` → "digit")
    preprocessing: str  # how photos are prepared for versions whose meta.json does not say
    display: Mapping[str, str] = field(default_factory=dict)  # language → the model's name for people
    shipped: str | None = None  # folder under inference/shipped/ with the default version, if any
    trainer: str | None = None  # the `photobot train` module that builds it from a dataset
    # The folder of labelled photos (one sub-folder per label) in the PHOTOBOT_DATASETS folders that its
    # trainer and retrainer use as base data; None for a model with data of its own kind (mnist.npz).
    dataset: str | None = None
    none_label: Mapping[str, str] = field(default_factory=dict)  # language → "Not a …" button text
    # Labels admins added to this model from the chat (`/addlabel flowers lavender`), in the order added,
    # and labels they removed since (`/dellabel`). A version learns them at its next retrain; until then
    # it answers with the labels it has (its meta.json), and captions and keyboards already offer them.
    added: tuple[str, ...] = ()
    removed: frozenset[str] = frozenset()

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def label(self, name: str) -> Label | None:
        return next((label for label in self.labels if label.name == name), None)

    def shown(self, language: str) -> str:
        return self.display.get(language, self.name)

    def label_named(self, word: str) -> str | None:
        """The label a normalised caption word names: one spelled so, else one it is the singular of
        (`rose` → roses, unless the model has a label `rose` too)."""
        spelled = next((label.name for label in self.labels if word in label.spellings()), None)
        if spelled is not None:
            return spelled
        singular = (label for label in self.labels if word in map(_singular, label.spellings()))
        return next((label.name for label in singular), None)

    def shown_label(self, name: str, language: str) -> str:
        """A label as people read it; a label the catalogue does not list (a number) as it is."""
        found = self.label(name)
        return found.shown(language) if found else name

    def with_label_names(self, names: Sequence[str]) -> ModelSpec:
        """This entry with the labels `names` and the chat's changes (kept entries keep their
        translations)."""
        labels = tuple(self.label(name) or Label(name) for name in self.labels_for(names))
        return replace(self, labels=labels)

    def labels_for(self, known: Sequence[str]) -> tuple[str, ...]:
        """The labels of this model for a version that knows `known`, once the chat's changes apply:
        what its next retrain learns (`known` without the removed labels, then the added ones)."""
        kept = [name for name in known if name not in self.removed]
        return (*kept, *(name for name in self.added if name not in kept))

    def with_label_changes(self, added: Sequence[str], removed: Iterable[str]) -> ModelSpec:
        """This entry with the labels admins added and removed from the chat (`added` replaces the
        earlier list): its labels follow at once."""
        removed = frozenset(removed) - set(added)
        changed = replace(self, added=tuple(added), removed=removed)
        # Labels added before and since removed leave with the old list; every added one joins.
        known = [name for name in self.label_names if name not in self.added or name in added]
        return changed.with_label_names(known)


class Catalogue:
    """An ordered, read-only collection of ModelSpecs, looked up by name or by chat mode."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in specs})
        modes = [spec.mode for spec in self._specs.values()]
        if len(set(modes)) != len(modes) or "auto" in modes:
            raise ValueError(f"chat modes must be unique and not 'auto': {modes}")

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __getitem__(self, name: str) -> ModelSpec:
        return self._specs[name]

    def get(self, name: str | None) -> ModelSpec | None:
        return self._specs.get(name) if name is not None else None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def modes(self) -> tuple[str, ...]:
        """Every chat mode: "auto", then one per model."""
        return ("auto", *(spec.mode for spec in self))

    def for_mode(self, mode: str) -> ModelSpec | None:
        """The model a chat mode sends every photo to; None for "auto" (and unknown modes)."""
        return next((spec for spec in self if spec.mode == mode), None)

    def named(self, word: str) -> ModelSpec | None:
        """The model a person means by `word`: its name (`digits`) or its chat mode (`digit`)."""
        return self.get(word) or self.for_mode(word)

    def of_kind(self, kind: ModelKind) -> tuple[ModelSpec, ...]:
        return tuple(spec for spec in self if spec.kind == kind)

    def only(self, names: Iterable[str]) -> Catalogue:
        """The entries named in `names`, in catalogue order."""
        wanted = set(names)
        return Catalogue(spec for spec in self if spec.name in wanted)

    def with_model(self, spec: ModelSpec) -> Catalogue:
        """This catalogue with `spec` added (or replacing the entry of the same name)."""
        specs = dict(self._specs)
        specs[spec.name] = spec
        return Catalogue(specs.values())

    def with_labels(self, name: str, labels: Sequence[str]) -> Catalogue:
        """This catalogue with model `name` answering with `labels` (e.g. from its serving version), and
        the labels added to it from the chat."""
        spec = self._specs.get(name)
        if spec is None or spec.labels_for(labels) == spec.label_names:
            return self
        return self.with_model(spec.with_label_names(labels))

    def find_caption(self, caption: str | None) -> tuple[str, str] | None:
        """(model, label) when a caption names a label in any language (`roses`, `Rose`, `розы`, `7`),
        or is a number a digit reader reads (`2026`); `MODEL: LABEL` looks in that model only. The
        first model's when several have the label (`find_captions` says whether they do)."""
        found = self.find_captions(caption)
        return found[0] if found else None

    def find_captions(self, caption: str | None) -> tuple[tuple[str, str], ...]:
        """Every (model, label) a caption names, in catalogue order: more than one when a bare label
        belongs to several models (`dog` of `pets` and of `animals`)."""
        if not caption:
            return ()
        prefixed = model_prefix(caption)
        named = self.get(prefixed[0]) if prefixed else None
        if named is not None and prefixed:  # `MODEL: LABEL`, for a label several models have
            return self.only((named.name,)).find_captions(prefixed[1])
        word = normalise(caption)
        found = tuple((spec.name, label) for spec in self if (label := spec.label_named(word)) is not None)
        readers = self.of_kind(ModelKind.DIGIT_READER)
        if not found and readers and is_number(word):
            return ((readers[0].name, word),)
        return found

    def knows(self, model: str, label: str) -> bool:
        """Whether `label` is an answer `model` can give: one of its labels, or a number it reads."""
        spec = self.get(model)
        if spec is None:
            return False
        return label in spec.label_names or (spec.kind == ModelKind.DIGIT_READER and is_number(label))


def model_prefix(caption: str) -> tuple[str, str] | None:
    """`MODEL: LABEL` → (the model word, normalised; what follows the colon); None without a colon."""
    model, colon, rest = caption.partition(":")
    return (normalise(model), rest) if colon else None


def is_number(word: str) -> bool:
    """A number as a digit reader reads it: 1 to MAX_NUMBER_DIGITS ASCII digits."""
    return 0 < len(word) <= MAX_NUMBER_DIGITS and word.isascii() and word.isdigit()


def normalise(word: str) -> str:
    """Lower case, NFC, without what people put around a word (spaces, `.`, `!`, emoji: `dog 🐶`,
    `🌹 roses`): how captions are compared. A `?` stays: `dog?` asks, it does not label."""
    word = unicodedata.normalize("NFC", word)
    start, end = 0, len(word)
    while start < end and _around(word[start]):
        start += 1
    while end > start and _around(word[end - 1]):
        end -= 1
    return word[start:end].casefold()


def _around(char: str) -> bool:
    """Spaces, `.` and `!`, and the characters emoji are made of: symbols (So: 🐶, Sk: skin tones),
    joiners, variation selectors and keycaps (Cf, Mn, Me), control characters (Cc)."""
    return (
        char in ".!" or char.isspace() or unicodedata.category(char) in ("So", "Sk", "Cf", "Mn", "Me", "Cc")
    )


def _singular(word: str) -> str:
    """A crude English singular (`roses` → `rose`), so a caption in either number names the label."""
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


# ------------------------------------------------------------------------------ PhotoBot's own models

DIGITS = ModelSpec(
    name="digits",
    kind=ModelKind.DIGIT_READER,
    labels=tuple(
        Label(str(d), aliases=(word_en, word_ru))
        for d, word_en, word_ru in zip(
            range(10),
            ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
            ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"),
            strict=True,
        )
    ),
    mode="digit",
    preprocessing=digits.PREPROCESSING_ID,
    display={"en": "digits", "ru": "цифры"},
    shipped="digits",
    trainer="training.train_digits",
    none_label={"en": "Not a digit", "ru": "Не цифра"},
)

FLOWERS = ModelSpec(
    name="flowers",
    kind=ModelKind.IMAGE_CLASSIFIER,
    labels=(
        Label("daisy", {"ru": "ромашка"}, ("ромашки",)),
        Label("dandelion", {"ru": "одуванчик"}, ("одуванчики",)),
        Label("roses", {"ru": "розы"}, ("роза",)),
        Label("sunflowers", {"ru": "подсолнухи"}, ("подсолнух",)),
        Label("tulips", {"ru": "тюльпаны"}, ("тюльпан",)),
    ),
    mode="flower",
    preprocessing=flowers.PREPROCESSING_ID,
    display={"en": "flowers", "ru": "цветы"},
    shipped="flowers",  # a head only: seeded by assembling it with the installed ImageNet backbone
    trainer="training.train_flowers",
    dataset="flower_photos",
    none_label={"en": "Not a flower", "ru": "Не цветок"},
)

DEFAULT_CATALOGUE = Catalogue((DIGITS, FLOWERS))
