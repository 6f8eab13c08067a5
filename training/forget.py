"""What /forget removes outside the database: the copies retraining made of a person's photos.

- Cached backbone features, `$DATA_DIR/cache/bottlenecks/<backbone>/<xx>/<sha256>.npy`: a copy of
  the photo's content, keyed by the photo's SHA-256 (`training.flower_data.forget_bottlenecks`).
- Report pictures, `$DATA_DIR/reports/<job>/mistakes.png`, when their `photos.txt` names one of the
  photos (`training.report.redact_reports`). Reports hold no user ids.

Out of reach, and said so in the bot's reply: models already trained on the photos, reports already
sent to the admin chat, and exports an operator made by hand (`photobot export` into any folder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.flower_data import forget_bottlenecks
from training.report import redact_reports

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemovedCopies:
    features: int  # cached feature files deleted
    report_pictures: int  # report pictures deleted


def bottleneck_root(data_dir: Path) -> Path:
    return Path(data_dir) / "cache" / "bottlenecks"


def reports_root(data_dir: Path) -> Path:
    return Path(data_dir) / "reports"


def remove_photo_copies(data_dir: Path, sha256s: Sequence[str]) -> RemovedCopies:
    """Delete every copy under `data_dir` made from these photos (blocking: run it in a thread)."""
    removed = RemovedCopies(
        features=forget_bottlenecks(bottleneck_root(data_dir), sha256s),
        report_pictures=redact_reports(reports_root(data_dir), sha256s),
    )
    log.info(
        "copies of %d forgotten photos removed: %d feature files, %d report pictures",
        len(sha256s),
        removed.features,
        removed.report_pictures,
    )
    return removed
