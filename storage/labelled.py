"""The labelled data set: photos whose true label people told us, one label per photo, split for good.

For a model, a photo's votes are the feedback on its predictions (a confirmed answer or a correction,
including `not_a_digit` / `not_a_flower`) and the captions it was sent with. Each person counts once
per photo (their latest word), blocked people not at all. The label with strictly the most people
behind it wins; a tie leaves the photo out. The split depends only on the photo's SHA-256, so a photo
never moves between train and validation as more photos arrive.

Everything here is synchronous SQL on a `sqlite3.Connection`, run inside one read transaction so it
sees one consistent snapshot while the bot goes on writing (WAL lets readers and the writer work at
the same time). A job in another process calls `read_labelled_set(database, images_dir, model)`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.connect import open_database
from storage.images import EXTENSIONS, sniff_format
from storage.records import NEGATIVE_LABELS

log = logging.getLogger(__name__)

DEFAULT_VALIDATION_PERCENT = 20
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class LabelledExample:
    sha256: str
    path: Path  # the image file
    format: str | None
    label: str
    split: str  # "train" or "validation"
    votes: int  # people behind the label
    dissent: int  # people who said something else
    contributors: tuple[int, ...]  # who gave the winning label, earliest first
    labelled_at: float  # when the winning label was first given

    @property
    def contributor(self) -> int:
        """The person this example is credited to (the first to give its label), for per-user caps."""
        return self.contributors[0]


@dataclass(frozen=True)
class LabelledSet:
    model: str
    examples: tuple[LabelledExample, ...]
    validation_percent: int
    ties: int  # photos left out because people disagreed evenly
    blocked_votes: int  # votes of blocked users, ignored
    missing_images: int  # photos whose file is gone (should stay 0)

    @property
    def train(self) -> list[LabelledExample]:
        return [e for e in self.examples if e.split == "train"]

    @property
    def validation(self) -> list[LabelledExample]:
        return [e for e in self.examples if e.split == "validation"]

    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(e.label for e in self.examples).items()))

    def contributor_counts(self) -> dict[int, int]:
        return dict(sorted(Counter(e.contributor for e in self.examples).items()))

    def new_since(self, since: float) -> list[LabelledExample]:
        """Examples first labelled after `since` (e.g. the last promotion), for "enough new data?"."""
        return [e for e in self.examples if e.labelled_at > since]


def split_of(sha256: str, validation_percent: int = DEFAULT_VALIDATION_PERCENT) -> str:
    """Train or validation, from the photo's hash alone: stable however the data set grows."""
    return "validation" if int(sha256[:8], 16) % 100 < validation_percent else "train"


_VOTES_SQL = """
    SELECT p.photo_sha256, f.user_id, f.true_label, f.created_at
    FROM feedback f JOIN predictions p ON p.id = f.prediction_id
    WHERE f.model = ?
    UNION ALL
    SELECT c.photo_sha256, c.user_id, c.label, c.created_at
    FROM contributions c WHERE c.model = ?
"""


def load_labelled_set(
    db: sqlite3.Connection,
    images_root: Path,
    model: str,
    validation_percent: int = DEFAULT_VALIDATION_PERCENT,
) -> LabelledSet:
    """Read the labelled set of `model` from one consistent snapshot of the database."""
    if not 0 <= validation_percent <= 100:
        raise ValueError(f"validation_percent must be within 0..100, got {validation_percent}")
    in_transaction = db.in_transaction
    if not in_transaction:
        db.execute("BEGIN")
    try:
        blocked = {row[0] for row in db.execute("SELECT id FROM users WHERE blocked = 1")}
        rows = db.execute(_VOTES_SQL, (model, model)).fetchall()
        photos = {
            row[0]: (row[1], row[2])
            for row in db.execute(
                """SELECT sha256, path, format FROM photos WHERE sha256 IN (
                       SELECT p.photo_sha256 FROM feedback f JOIN predictions p ON p.id = f.prediction_id
                       WHERE f.model = ?
                       UNION SELECT photo_sha256 FROM contributions WHERE model = ?)""",
                (model, model),
            )
        }
    finally:
        if not in_transaction:
            db.execute("COMMIT")
    return _tally(model, rows, blocked, photos, Path(images_root), validation_percent)


def _tally(
    model: str,
    rows: Iterable[Sequence],
    blocked: set[int],
    photos: dict[str, tuple[str, str | None]],
    images_root: Path,
    validation_percent: int,
) -> LabelledSet:
    latest: dict[tuple[str, int], tuple[float, str]] = {}
    blocked_votes = 0
    for sha256, user_id, label, at in rows:
        if user_id in blocked:
            blocked_votes += 1
            continue
        key = (sha256, user_id)
        if key not in latest or at >= latest[key][0]:
            latest[key] = (at, label)
    ballots: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for (sha256, user_id), (at, label) in latest.items():
        ballots[sha256].append((at, user_id, label))

    examples, ties, missing = [], 0, 0
    for sha256 in sorted(ballots):
        votes = sorted(ballots[sha256])
        counts = Counter(label for _, _, label in votes).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            ties += 1
            continue
        if sha256 not in photos:
            missing += 1
            continue
        relative, image_format = photos[sha256]
        path = images_root / relative
        if not path.is_file():
            missing += 1
            log.warning("labelled photo %s has no image file at %s", sha256, path)
            continue
        label, count = counts[0]
        winners = [(at, user_id) for at, user_id, voted in votes if voted == label]
        examples.append(
            LabelledExample(
                sha256=sha256,
                path=path,
                format=image_format,
                label=label,
                split=split_of(sha256, validation_percent),
                votes=count,
                dissent=len(votes) - count,
                contributors=tuple(user_id for _, user_id in winners),
                labelled_at=winners[0][0],
            )
        )
    if ties or blocked_votes or missing:
        log.info(
            "labelled set %s: %d photos; left out %d ties, %d blocked votes, %d missing images",
            model,
            len(examples),
            ties,
            blocked_votes,
            missing,
        )
    return LabelledSet(model, tuple(examples), validation_percent, ties, blocked_votes, missing)


def read_labelled_set(
    database: Path | str,
    images_root: Path | str,
    model: str,
    validation_percent: int = DEFAULT_VALIDATION_PERCENT,
) -> LabelledSet:
    """The labelled set of `model`, read from another process while the bot keeps writing."""
    if not Path(database).is_file():
        raise FileNotFoundError(f"no PhotoBot database at {database}")
    db = open_database(database)
    try:
        return load_labelled_set(db, Path(images_root), model, validation_percent)
    finally:
        db.close()


def cap_per_contributor(
    examples: Sequence[LabelledExample], max_per_user: int
) -> tuple[list[LabelledExample], dict[int, int]]:
    """Keep at most `max_per_user` examples credited to each person, earliest first.

    Returns the kept examples (in their original order) and, per person, how many were left out, so
    one prolific or malicious contributor cannot outweigh everyone else.
    """
    by_user: dict[int, list[LabelledExample]] = defaultdict(list)
    for example in examples:
        by_user[example.contributor].append(example)
    keep: set[str] = set()
    dropped: dict[int, int] = {}
    for user_id, theirs in by_user.items():
        theirs.sort(key=lambda e: (e.labelled_at, e.sha256))
        keep.update(e.sha256 for e in theirs[:max_per_user])
        if len(theirs) > max_per_user:
            dropped[user_id] = len(theirs) - max_per_user
    return [e for e in examples if e.sha256 in keep], dict(sorted(dropped.items()))


def is_negative(model: str, label: str) -> bool:
    return NEGATIVE_LABELS.get(model) == label


def export_labelled_set(
    labelled: LabelledSet,
    out_dir: Path | str,
    *,
    split: str | None = None,
    include_negatives: bool = False,
) -> dict[str, int]:
    """Copy the labelled photos into `out_dir/<label>/<sha256>.<ext>`; return photos per label.

    Files are named by content, so exporting again into the same folder adds only what is new.
    Photos labelled `not_a_digit` / `not_a_flower` are left out unless asked for: most tools read
    every folder as a class of the model.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    for example in labelled.examples:
        if split is not None and example.split != split:
            continue
        if not include_negatives and is_negative(labelled.model, example.label):
            continue
        if not _safe_folder_name(example.label):
            log.warning("skipping photo %s: label %r cannot be a folder name", example.sha256, example.label)
            continue
        folder = out / example.label
        folder.mkdir(exist_ok=True)
        target = folder / f"{example.sha256}{_extension(example)}"
        if not target.exists():
            temp = folder / f".{uuid.uuid4().hex}.part"
            shutil.copyfile(example.path, temp)
            os.replace(temp, target)
        counts[example.label] += 1
    return dict(sorted(counts.items()))


def _extension(example: LabelledExample) -> str:
    image_format = (example.format or "").lower()
    if image_format not in EXTENSIONS:
        with open(example.path, "rb") as file:
            image_format = sniff_format(file.read(16)) or ""
    return EXTENSIONS.get(image_format, "")


def _safe_folder_name(label: str) -> bool:
    return bool(label) and not label.startswith(".") and not any(c in label for c in "/\\\0")
