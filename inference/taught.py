"""Taught models as catalogue entries: the rules for their names and labels, and the merge.

A model created from the chat (`/newmodel pets dog cat`) or the command line (`photobot models new`)
is an image classifier on the shared pretrained backbone, like flowers: its mode is its name (`/use
pets`), its photos are prepared as the flowers' are, and it has no base dataset — everything it knows
comes from the photos people labelled for it. The database keeps the rows (`storage.taught`); the bot
and the command line merge them into the built-in catalogue with `with_taught`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from inference import flowers
from inference.catalogue import Catalogue, Label, ModelKind, ModelSpec, is_number, normalise

NAME = re.compile(r"[a-z][a-z0-9_]{0,19}")  # a chat mode too: it starts with a letter
LABEL = re.compile(r"(?=.*[a-z])[a-z0-9_-]{1,30}")  # ASCII: it travels in callback data (bot.callbacks)
MIN_LABELS, MAX_LABELS = 2, 50
MAX_LABEL_CHARS = 30
MIN_PHOTOS_PER_LABEL = 10  # what a first version is asked to have of each label ("12 of at least 10")
# A model's name is a chat's mode and follows /use and /retrain: none is one of the bot's commands,
# which would read as that command in their replies and lists (tests/bot checks this list is complete).
COMMAND_NAMES = frozenset(
    {"start", "help", "stats", "forget", "use", "auto", "digit", "flower", "models", "retrain"}
    | {"rollback", "block", "unblock", "newmodel", "addlabel", "dellabel", "delmodel"}
)
# What storage records as the label of a photo of none of a model's labels (`not_a_digit`, `not_pets`),
# and the folder `photobot evaluate` reads such photos from: no label may be taken for one.
NEGATIVE_PREFIX = "not_"
NONE_FOLDER = "none"


@dataclass(frozen=True)
class Taught:
    """What the catalogue needs of a taught model (the database's row carries more)."""

    name: str
    labels: Sequence[tuple[str, Mapping[str, str]]]  # (name, language → shown name)


class TaughtError(ValueError):
    """A name or label that cannot be used. `key` names the reply in bot.texts; `values` fill it."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(f"{key}: {values}")
        self.key, self.values = key, values


def taught_spec(model: Taught) -> ModelSpec:
    """The catalogue entry of a taught model."""
    return ModelSpec(
        name=model.name,
        kind=ModelKind.IMAGE_CLASSIFIER,
        labels=tuple(Label(name, dict(display)) for name, display in model.labels),
        mode=model.name,
        preprocessing=flowers.PREPROCESSING_ID,
        none_label={"en": "None of these", "ru": "Ничего из этого"},
    )


def with_taught(base: Catalogue, models: Iterable[Taught]) -> Catalogue:
    """`base` with every taught model added (one whose name or mode clashes with `base` is left out)."""
    catalogue = base
    for model in models:
        if model.name in base or model.name in base.modes:
            continue
        catalogue = catalogue.with_model(taught_spec(model))
    return catalogue


def with_added_labels(base: Catalogue, rows: Iterable[tuple[str, str, bool]]) -> Catalogue:
    """`base` with the labels admins added to its built-in image models (`/addlabel flowers lavender`):
    `(model, label, removed)` rows in the order added (`storage.added_labels`)."""
    added: dict[str, list[str]] = {}
    removed: dict[str, set[str]] = {}
    for model, label, gone in rows:
        if gone:
            removed.setdefault(model, set()).add(label)
        else:
            added.setdefault(model, []).append(label)
    catalogue = base
    for spec in base:
        changes = spec.added or spec.removed or spec.name in added or spec.name in removed
        if takes_added_labels(spec) and changes:
            changed = spec.with_label_changes(added.get(spec.name, ()), removed.get(spec.name, ()))
            catalogue = catalogue.with_model(changed)
    return catalogue


def takes_added_labels(spec: ModelSpec) -> bool:
    """A built-in image model to which admins may add labels: its retrain learns them from the chat's
    photos beside its base data (flowers). A taught model keeps its labels in its own row."""
    return spec.kind == ModelKind.IMAGE_CLASSIFIER and not is_taught(spec)


def is_taught(spec: ModelSpec) -> bool:
    """A model with no base data of its own: everything it knows, people labelled in the chat."""
    return spec.kind == ModelKind.IMAGE_CLASSIFIER and spec.dataset is None and spec.shipped is None


def check_name(name: str, catalogue: Catalogue, taken: Iterable[str] = ()) -> str:
    """The new model's name, or TaughtError saying what is wrong with it."""
    if NAME.fullmatch(name) is None:
        raise TaughtError("teach_bad_name", name=name[:40])
    if name in catalogue or name in catalogue.modes or name in set(taken):
        raise TaughtError("teach_name_taken", name=name)
    if name in COMMAND_NAMES:
        raise TaughtError("teach_name_command", name=name)
    if name == NONE_FOLDER:
        raise TaughtError("teach_name_reserved", name=name)
    return name


def check_labels(
    labels: Sequence[str], existing: Sequence[str] = (), model: ModelSpec | None = None
) -> list[str]:
    """Labels as stored (normalised), or TaughtError: 2–50 in all, each ≤ 30 Latin letters, digits, _
    or -, with a letter among them (a number caption is a digit), not `none` or `not_…` (a photo of
    none), unique. With `model` (whose labels are then the `existing`), none a caption of its labels
    already names (`rose` is the flowers' roses)."""
    existing = model.label_names if model is not None else existing
    checked: list[str] = []
    for raw in labels:
        label = normalise(raw)
        if len(label) > MAX_LABEL_CHARS:
            raise TaughtError("teach_label_too_long", label=raw[:40], limit=MAX_LABEL_CHARS)
        if LABEL.fullmatch(label) is None or is_number(label):
            raise TaughtError("teach_bad_label", label=raw[:40])
        if label == NONE_FOLDER or label.startswith(NEGATIVE_PREFIX):
            raise TaughtError("teach_reserved_label", label=label)
        if label in existing:
            raise TaughtError("teach_label_exists", label=label)
        if label in checked:
            raise TaughtError("teach_label_twice", label=label)
        named = model.label_named(label) if model is not None else None
        if named is not None:
            raise TaughtError("teach_label_named", label=label, existing=named)
        checked.append(label)
    total = len(checked) + len(existing)
    if not MIN_LABELS <= total <= MAX_LABELS:
        raise TaughtError("teach_label_count", count=total, low=MIN_LABELS, high=MAX_LABELS)
    return checked
