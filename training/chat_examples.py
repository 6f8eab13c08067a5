"""The chat photos a retrain may learn from, and how much each may weigh.

Which photos: storage's labelled set (blocked users, contradicting labels and untrusted paths already
left out) minus negative labels ("not a digit"); near-duplicates count once (`training.near_duplicates`);
at most Settings.retrain_max_labels_per_user photos per person, then no person more than
Settings.retrain_max_user_share of them; then split by person, so the held-out chat photos are other
people's than the ones trained on. From fewer people than Settings.retrain_min_contributors (or than
the share allows) no chat photo counts at all. Every photo left out is counted, by why, for the report.

How much: a base example weighs 1; the chat examples together weigh at most `share` of the training
weight (RetrainOptions.chat_share), and each at most MAX_CHAT_WEIGHT base examples (`chat_weight`;
RetrainOptions.max_chat_weight for an admin who trusts the chat photos more).
So many chat photos matter against 60,000 base images, while a few can never be a fixed share of
every epoch: each is seen once per epoch like any base example, and can move the model only as far
as MAX_CHAT_WEIGHT ordinary examples would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from inference.taught import MIN_PHOTOS_PER_LABEL
from storage import LabelledExample, SyncStore, cap_per_contributor, negative_label
from storage.labelled import cap_share_per_contributor, minimum_contributors, split_by_contributor
from training.jobs import RetrainError
from training.near_duplicates import collapse_near_duplicates
from training.report import ReportData

if TYPE_CHECKING:
    from training.retrain_settings import RetrainSettings

T = TypeVar("T")

# A chat example weighs at most this many base examples: a handful of photos (a dog labelled
# "dandelion") cannot outweigh what the base data teaches about the same pixels.
MAX_CHAT_WEIGHT = 5.0
MAX_CHAT_SHARE = 0.9  # of the training weight, whatever is asked


@dataclass(frozen=True)
class ChatRules:
    """What a retrain may take from chat (photobot's Settings.retrain_*), so one account cannot be most
    of it."""

    max_per_user: int = 200  # photos credited to one person, at most
    max_share: float = 0.25  # of the chat photos used, one person's at most
    min_contributors: int = 4  # different people before chat photos count at all
    max_pixels: int = 40_000_000  # photos larger than this are not even opened to compare

    @property
    def people_needed(self) -> int:
        """At least min_contributors, and at least 1/max_share: four people at 25% each."""
        return max(self.min_contributors, minimum_contributors(self.max_share))


@dataclass
class ChatSelection:
    examples: list[LabelledExample]  # split by person: the held-out ones are other people's
    capped: dict[int, int]  # user → photos left out by the per-user cap (max_per_user)
    dropped: Counter  # reason → photos left out
    refused: str | None = None  # why no chat photo may count (too few people); None: they may
    contributors: int = 0  # different people behind the photos


def select_chat_examples(store: SyncStore, model: str, rules: ChatRules) -> ChatSelection:
    """The chat photos a retrain may use, and every photo left out, counted by why.

    Storage's labelled set minus negative labels; near-duplicates count once; the per-user cap, then
    the per-person share; then split by person. Photos from fewer people than `rules.people_needed`:
    `refused` says why, and no chat photo may count (no photo at all: nothing to refuse).
    """
    labelled = store.labelled_set(model)
    dropped: Counter = Counter()
    if labelled.ties:
        dropped["labels that contradict each other"] += labelled.ties
    if labelled.blocked_votes:
        dropped["votes of blocked users"] += labelled.blocked_votes
    if labelled.missing_images:
        dropped["image file missing"] += labelled.missing_images
    if labelled.refused_paths:
        dropped["image path or hash refused (not a file of the image store)"] += labelled.refused_paths
    negative = negative_label(model)
    usable = [e for e in labelled.examples if e.label != negative]
    if len(usable) < len(labelled.examples):
        dropped[f"labelled {negative}"] += len(labelled.examples) - len(usable)
    unique = collapse_near_duplicates(usable, rules.max_pixels)
    if unique.duplicates:
        dropped["near-duplicate of another photo"] += unique.duplicates
    if unique.unreadable:
        dropped["photo cannot be decoded"] += unique.unreadable
    kept, capped = cap_per_contributor(unique.kept, rules.max_per_user)
    people = len({e.contributor for e in kept})
    if kept and people < rules.people_needed:  # no chat photo at all: a forced run uses the base data
        return ChatSelection(kept, capped, dropped, _too_few_people(len(kept), people, rules), people)
    fair = cap_share_per_contributor(kept, rules.max_share)
    assert fair is not None  # no photos, or people_needed >= 1/max_share people: some cap fits
    within, over = fair
    if over:
        dropped[share_reason(rules)] += sum(over.values())
    return ChatSelection(split_by_contributor(within), capped, dropped, None, people)


def _too_few_people(photos: int, people: int, rules: ChatRules) -> str:
    return (
        f"the {photos} usable chat photo{'s' if photos != 1 else ''} come from {people} "
        f"{'person' if people == 1 else 'people'}; chat photos count only once at least "
        f"{rules.people_needed} different people labelled them (RETRAIN_MIN_CONTRIBUTORS="
        f"{rules.min_contributors}, at most {rules.max_share:.0%} from one person), so that no one "
        "account can be most of a retrain. Nothing was trained"
    )


def share_reason(rules: ChatRules) -> str:
    return f"over one person's share (at most {rules.max_share:.0%} of the chat photos used)"


def within_share(
    items: list[T], example_of: Callable[[T], LabelledExample], rules: ChatRules, dropped: dict[str, int]
) -> list[T]:
    """The photos that could be read, cut again to each person's share (others' may have failed).

    Photos of honest people that cannot be read must not leave one account more than its share.
    """
    fair = cap_share_per_contributor([example_of(item) for item in items], rules.max_share)
    if fair is None:
        people = len({example_of(item).contributor for item in items})
        raise RetrainError(
            f"the chat photos that could be read come from {people} "
            f"{'person' if people == 1 else 'people'}: too few for at most {rules.max_share:.0%} "
            "from one person; nothing was trained"
        )
    within, over = fair
    if over:
        reason = share_reason(rules)
        dropped[reason] = dropped.get(reason, 0) + sum(over.values())
    keep = {e.sha256 for e in within}
    return [item for item in items if example_of(item).sha256 in keep]


def short_labels(labels: Iterable[str], examples: Iterable[LabelledExample]) -> dict[str, int]:
    """Of `labels`, those with fewer than MIN_PHOTOS_PER_LABEL of `examples`, with how many they have:
    what a label needs before a version learns it."""
    counts = Counter(e.label for e in examples)
    return {label: counts[label] for label in labels if counts[label] < MIN_PHOTOS_PER_LABEL}


def last_promotion(store: SyncStore, model: str) -> float:
    """When a version of `model` was last promoted (0 when never): labels after that count as new."""
    events = store.model_events(model, action="promote", limit=1)
    return events[0].created_at if events else 0.0


def read_photo(
    example: LabelledExample, settings: RetrainSettings, target_size: int, grayscale: bool
) -> Image.Image:
    """A stored chat photo through the serving decoder (size checks, EXIF orientation, draft)."""
    from inference.decode import decode_image

    return decode_image(
        example.path.read_bytes(),
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        target_size=target_size,
        grayscale=grayscale,
    )


def chat_weight(n_base: int, n_chat: int, share: float, most: float = MAX_CHAT_WEIGHT) -> float:
    """Each chat example's weight, a base example weighing 1.

    Together the chat examples weigh `share` of the training weight, unless that would make one weigh
    more than `most` base examples: then each weighs that, and together less.
    """
    if n_chat == 0 or share <= 0:
        return 0.0
    share = min(share, MAX_CHAT_SHARE)
    return float(min(most, share / (1.0 - share) * n_base / n_chat))


def weighted(
    base: tuple[np.ndarray, np.ndarray], chat: tuple[np.ndarray, np.ndarray], weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base and chat examples as one training set, each chat example once, with its weight."""
    x = np.concatenate([base[0], chat[0].astype(base[0].dtype, copy=False)])
    y = np.concatenate([base[1], chat[1]])
    weights = np.concatenate([np.ones(len(base[0]), np.float32), np.full(len(chat[0]), weight, np.float32)])
    return x, y, weights


def record_weight(report: ReportData, n_base: int, n_chat: int, weight: float) -> None:
    """What the report says about the chat examples' weight against the base data."""
    report.base_examples, report.chat_examples, report.chat_weight = n_base, n_chat, weight


def usage(report: ReportData, used: list[LabelledExample]) -> None:
    """The chat photos a job really used: per label, per person (counted only), per split."""
    report.used_per_label = dict(sorted(Counter(e.label for e in used).items()))
    report.used_per_contributor = dict(sorted(Counter(e.contributor for e in used).items()))
    report.split_counts = dict(Counter(e.split for e in used))
