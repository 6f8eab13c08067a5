"""The labelled data set: photos whose true label people told us, one label per photo, split for good.

For a model, a photo's votes are the feedback on its predictions (a confirmed answer or a correction,
including `not_a_digit` / `not_a_flower`) and the captions it was sent with. Each person counts once
per photo (their latest word), blocked people not at all. The label with strictly the most people
behind it wins; a tie leaves the photo out. The split depends only on the photo's SHA-256, so a photo
never moves between train and validation as more photos arrive. A retrain re-splits by person instead
(`split_by_contributor`) and caps each person's share (`cap_share_per_contributor`).

The photos' bytes are in the database; the image folder is this machine's cache of them, and a photo
it lacks is written into it from the database as the set is read, so a job on any machine finds every
labelled photo as a file (`LabelledExample.path`). Rows in the database are not trusted with the file
system: an image's path is built from its hash,
which must be 64 lowercase hex digits, and must resolve inside the image folder; anything else is
refused and counted (`LabelledSet.refused_paths`).

Everything here is synchronous SQL on a `storage.dialect.Connection`, run inside one read transaction so
it sees one consistent snapshot while the bot goes on writing (SQLite's WAL and PostgreSQL's MVCC let
readers and the writer work at the same time). A job in another process calls
`read_labelled_set(database, images_dir, model)`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from storage.connect import database_exists, open_database
from storage.dialect import Connection, Database
from storage.images import EXTENSIONS, ImageStore, is_sha256_hex, sniff_format
from storage.photo_bytes import fill_cache
from storage.records import negative_label

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
    refused_paths: int = 0  # rows whose hash or path is not a safe image path (tampered database)

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
    db: Connection,
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
        _cache_missing(db, Path(images_root), photos)
    finally:
        if not in_transaction:
            db.execute("COMMIT")
    return _tally(model, rows, blocked, photos, Path(images_root), validation_percent)


def _cache_missing(db: Connection, images_root: Path, photos: dict[str, tuple[str, str | None]]) -> None:
    """Write the photos this machine's cache lacks from the database (in the caller's snapshot)."""
    missing = [
        sha256
        for sha256, (relative, _) in photos.items()
        if (path := image_path(images_root, sha256, relative)) is not None and not path.is_file()
    ]
    if missing:
        with ImageStore(images_root) as images:
            fill_cache(db, images, missing)


def image_path(images_root: Path, sha256: str, stored: str | None = None) -> Path | None:
    """The image file of `sha256` under `images_root`, or None when the row cannot be trusted.

    The path is built from the validated hash (`<first two>/<sha256>`, as `ImageStore` writes it), never
    taken from the row; a stored path that says otherwise, or a file that resolves outside the image
    folder (a symlink planted there), is refused.
    """
    if not is_sha256_hex(sha256):
        return None
    relative = f"{sha256[:2]}/{sha256}"
    if stored is not None and stored != relative:
        return None
    root = images_root.resolve()
    path = root / relative
    if not path.resolve().is_relative_to(root):
        return None
    return path


def _tally(
    model: str,
    rows: Iterable[tuple[str, int, str, float]],  # (sha256, user_id, label, at) of each vote
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

    examples, ties, missing, refused = [], 0, 0, 0
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
        path = image_path(images_root, sha256, relative)
        if path is None:
            refused += 1
            log.warning(
                "labelled photo %r refused: its hash or path %r is not a safe image path", sha256, relative
            )
            continue
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
    if ties or blocked_votes or missing or refused:
        log.info(
            "labelled set %s: %d photos; left out %d ties, %d blocked votes, %d missing images, "
            "%d refused paths",
            model,
            len(examples),
            ties,
            blocked_votes,
            missing,
            refused,
        )
    return LabelledSet(model, tuple(examples), validation_percent, ties, blocked_votes, missing, refused)


def read_labelled_set(
    database: Database,
    images_root: Path | str,
    model: str,
    validation_percent: int = DEFAULT_VALIDATION_PERCENT,
) -> LabelledSet:
    """The labelled set of `model`, read from another process while the bot keeps writing."""
    if not database_exists(database):
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


def share_cap(counts: Sequence[int], max_share: float) -> int | None:
    """The most examples anyone may keep so that no one is more than `max_share` of what is kept.

    Everyone keeps min(their count, cap); the cap is the largest for which cap <= max_share × total
    kept. The caps that work are 1..best (the total kept grows by at most one per person per step),
    so a bisection finds it. None when no cap works: fewer than 1/max_share people.
    """
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be above 0 and at most 1, got {max_share}")
    counts = [n for n in counts if n > 0]
    if not counts:
        return 0

    def fits(cap: int) -> bool:
        return cap <= max_share * sum(min(n, cap) for n in counts) + 1e-9

    if not fits(1):
        return None
    low, high = 1, max(counts)  # fits(low) holds; find the largest cap that fits
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def cap_share_per_contributor(
    examples: Sequence[LabelledExample], max_share: float
) -> tuple[list[LabelledExample], dict[int, int]] | None:
    """Keep each person's earliest examples so that no one is more than `max_share` of those kept.

    Returns the kept examples (in their original order) and, per person, how many were left out; None
    when too few people gave examples for any share to hold (see `share_cap`).
    """
    cap = share_cap(list(Counter(e.contributor for e in examples).values()), max_share)
    if cap is None:
        return None
    return cap_per_contributor(examples, cap)


def minimum_contributors(max_share: float) -> int:
    """How many people it takes before no one is more than `max_share` of the examples (1/share)."""
    return math.ceil(1 / max_share - 1e-9)


def split_by_contributor(
    examples: Sequence[LabelledExample], validation_percent: int = DEFAULT_VALIDATION_PERCENT
) -> list[LabelledExample]:
    """Re-split so that the held-out photos are other people's than the ones trained on.

    A person's photos all go to one side, chosen by a stable hash of their id (`_contributor_bucket`), so
    the held-out score says how the model does for people it never learnt from, and one account cannot
    both teach a wrong answer and vouch for it. A person never changes sides as photos arrive, except
    that with two or more people each side gets at least one (the person hashed closest moves). With
    only one person there is no one else to hold out: their photos keep the photo-hash split
    (`split_of`), for an admin who allowed a single contributor (Settings.retrain_min_contributors).
    """
    people = sorted({e.contributor for e in examples})
    if len(people) < 2:
        return [replace(e, split=split_of(e.sha256, validation_percent)) for e in examples]
    buckets = {u: _contributor_bucket(u) for u in people}
    held_out = {u for u in people if buckets[u] < validation_percent}
    if not held_out:
        held_out = {min(people, key=lambda u: (buckets[u], u))}
    elif len(held_out) == len(people):
        held_out.discard(max(people, key=lambda u: (buckets[u], u)))
    return [replace(e, split="validation" if e.contributor in held_out else "train") for e in examples]


def _contributor_bucket(user_id: int) -> int:
    """0..99 per person, stable and evenly spread; below the validation percentage: held out."""
    return int(hashlib.sha256(f"contributor:{user_id}".encode()).hexdigest()[:8], 16) % 100


def is_negative(model: str, label: str) -> bool:
    return negative_label(model) == label


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
