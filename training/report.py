"""The retraining report: what an admin reads (and sees) when a job ends.

Text: old vs new accuracy on each evaluation set, the decision and why, how many chat photos were used
per label, from how many people (and what was left out, and why). Pictures (PNG, matplotlib's Agg
backend, no display needed): the candidate's confusion matrices, the training curves, and a grid of
the chat photos the new model still gets wrong.

No user id is ever written into a report (it is sent to the admin chat and kept on disk). The
SHA-256 of every photo drawn in `mistakes.png` is listed in `photos.txt` beside it, so /forget can
find and remove the pictures that show a person's photos (`redact_reports`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.gate import GateDecision

log = logging.getLogger(__name__)

MAX_MISTAKES_SHOWN = 24
MAX_CONTRIBUTORS_SHOWN = 10  # photos per person, most first; the rest are counted
TEXT_FILE = "report.txt"
CONFUSION_FILE = "confusion.png"
CURVES_FILE = "curves.png"
MISTAKES_FILE = "mistakes.png"
PHOTOS_FILE = "photos.txt"  # the SHA-256 of each photo drawn in mistakes.png, one per line
# Lines of reports written before user ids were left out; /forget strips them.
_LEGACY_ID_LINES = ("  per contributor: ", "  left out by the per-user cap: ")


@dataclass(frozen=True)
class Mistake:
    """A chat photo the candidate still reads wrong."""

    path: Path
    label: str
    predicted: str
    split: str  # "train" or "validation"


@dataclass
class ReportData:
    model: str
    job_id: int | None
    serving_version: int | None
    candidate_version: int | None = None
    decision: GateDecision | None = None
    skipped: str | None = None  # why no candidate was trained
    labels: Sequence[str] = ()
    used_per_label: dict[str, int] = field(default_factory=dict)  # chat photos in the job, by label
    used_per_contributor: dict[int, int] = field(default_factory=dict)  # user → photos; only counted in text
    split_counts: dict[str, int] = field(default_factory=dict)  # chat photos: train / validation
    capped: dict[int, int] = field(default_factory=dict)  # user → photos left out by the per-user cap
    dropped: dict[str, int] = field(default_factory=dict)  # reason → photos left out
    new_classes: dict[str, int] = field(default_factory=dict)  # labels no model knows (flowers), not added
    # Labels added from the chat (/addlabel) with too few usable photos to learn yet: label → photos.
    waiting: dict[str, int] = field(default_factory=dict)
    base_examples: int = 0  # each weighs 1 in training
    chat_examples: int = 0  # chat examples trained on (digits: one per digit), each once per epoch
    chat_weight: float = 0.0  # what each weighs against a base example (training.chat_examples)
    history: dict[str, list[float]] = field(default_factory=dict)
    confusion: dict[str, np.ndarray] = field(default_factory=dict)  # set title → candidate's matrix
    mistakes: list[Mistake] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Report:
    text: str
    images: tuple[Path, ...]
    folder: Path


def report_text(data: ReportData) -> str:
    """The report as plain text (also the Telegram message: short lines, no markup)."""
    title = f"Retraining {data.model}" + (f" (job {data.job_id})" if data.job_id is not None else "")
    lines = [title]
    serving = data.serving_version
    kept = f"v{serving} keeps serving." if serving is not None else "No version serves yet."
    if data.skipped:
        lines += [f"Nothing done: {data.skipped}", kept]
        return "\n".join(lines)
    decision = data.decision
    if decision is not None:
        if decision.promote:
            was = f"was v{serving}" if serving is not None else "its first version"
            lines.append(f"PROMOTED: v{data.candidate_version} now serves ({was}).")
        else:
            lines.append(f"REJECTED: v{data.candidate_version} kept in the store. {kept}")
        lines.append(f"Why: {decision.reason}")
        lines.append("")
        compared = f"v{serving} → " if serving is not None else ""
        lines.append(f"Accuracy, {compared}v{data.candidate_version}:")
        for score in decision.scores:
            if score.n and score.serving is None and score.candidate is not None:
                new = " (a new label)" if serving is not None else ""  # else every label is new
                lines.append(f"  {score.title} ({score.n}): {score.candidate:.2%}{new}")
                continue
            if score.n == 0 or score.serving is None or score.candidate is None:
                lines.append(f"  {score.title}: no photos")
                continue
            change = score.change_points or 0.0
            lines.append(
                f"  {score.title} ({score.n}): {score.serving:.2%} → {score.candidate:.2%} "
                f"({change:+.2f} pts)"
            )
    lines.append("")
    splits = ", ".join(f"{n} {name}" for name, n in sorted(data.split_counts.items()))
    used = sum(data.used_per_label.values())
    lines.append(f"Chat photos used: {used}" + (f" ({splits})" if splits else ""))
    if data.chat_examples and data.chat_weight:
        lines.append("  " + _weight_line(data))
    if data.used_per_label:
        lines.append("  per label: " + ", ".join(f"{k} {v}" for k, v in data.used_per_label.items()))
    if data.used_per_contributor:
        lines.append("  " + _contributors_line(data.used_per_contributor))
    if data.capped:
        lines.append(
            f"  left out by the per-user cap: {sum(data.capped.values())} from {_people(len(data.capped))}"
        )
    for reason, count in data.dropped.items():
        lines.append(f"  left out, {reason}: {count}")
    if data.new_classes:
        lines.append(
            "New classes from chat (not added; a model change is needed): "
            + ", ".join(f"{k} ({v})" for k, v in data.new_classes.items())
        )
    if data.waiting:
        lines.append(
            "Added labels not learned yet (too few usable photos): "
            + ", ".join(f"{k} ({v})" for k, v in data.waiting.items())
        )
    if data.mistakes:
        lines.append(f"Chat photos the new model still gets wrong: {len(data.mistakes)}")
    lines.append(f"Time: {data.seconds:.0f} s")
    return "\n".join(lines)


def _weight_line(data: ReportData) -> str:
    """How much the chat examples weighed against the base data: the bound on what they could teach."""
    chat = data.chat_examples * data.chat_weight
    share = chat / (chat + data.base_examples)
    return (
        f"trained on {data.chat_examples} chat examples, weight {data.chat_weight:.1f} each "
        f"({share:.1%} of the training weight, beside {data.base_examples} base examples of weight 1)"
    )


def _contributors_line(used: dict[int, int]) -> str:
    """How many photos each person gave, most first, without saying who (the ids stay out)."""
    counts = sorted(used.values(), reverse=True)
    shown = ", ".join(str(n) for n in counts[:MAX_CONTRIBUTORS_SHOWN])
    more = len(counts) - MAX_CONTRIBUTORS_SHOWN
    return f"from {_people(len(counts))}, most first: {shown}" + (f" and {more} more" if more > 0 else "")


def _people(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


def write_report(data: ReportData, folder: Path) -> Report:
    """Write report.txt and the PNGs into `folder`; return the text and the image paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = report_text(data)
    (folder / TEXT_FILE).write_text(text + "\n", encoding="utf-8")
    images: list[Path] = []
    if data.skipped is None:
        import matplotlib

        matplotlib.use("Agg")
        for name, draw in ((CONFUSION_FILE, _confusion_figure), (CURVES_FILE, _curves_figure)):
            figure = draw(data)
            if figure is None:
                continue
            figure.savefig(folder / name, dpi=90)
            _close(figure)
            images.append(folder / name)
        if _write_mistakes(data, folder):
            images.append(folder / MISTAKES_FILE)
    log.info("report written to %s (%d images)", folder, len(images))
    return Report(text=text, images=tuple(images), folder=folder)


def _write_mistakes(data: ReportData, folder: Path) -> bool:
    """Draw mistakes.png and list the photos it shows in photos.txt, written first: a picture on
    disk is always findable by /forget."""
    shown = _readable_mistakes(data.mistakes)
    if not shown:
        return False
    _write_atomically(folder / PHOTOS_FILE, "".join(f"{sha256}\n" for _, _, sha256 in shown))
    figure = _mistakes_figure(data, shown)
    figure.savefig(folder / MISTAKES_FILE, dpi=90)
    _close(figure)
    return True


def redact_reports(root: Path, sha256s: Collection[str]) -> int:
    """Remove the report pictures under `root` that show any of these photos; return how many.

    A folder's `photos.txt` says which photos its mistakes.png shows. A mistakes.png without one was
    written before photos were recorded and may show anyone's: it goes too. Lines with user ids in
    reports of that time are removed from their text.
    """
    root, forgotten = Path(root), set(sha256s)
    if not root.is_dir():
        return 0
    removed = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        manifest, picture = folder / PHOTOS_FILE, folder / MISTAKES_FILE
        try:
            listed = set(manifest.read_text(encoding="utf-8").split())
        except FileNotFoundError:
            listed = None
        if listed is None or forgotten & listed:
            if picture.exists():
                picture.unlink()
                removed += 1
            manifest.unlink(missing_ok=True)  # after the picture: a crash leaves it findable
        _strip_legacy_ids(folder / TEXT_FILE)
    if removed:
        log.info("removed %d report pictures that showed forgotten photos", removed)
    return removed


def _strip_legacy_ids(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    kept = [line for line in text.splitlines(keepends=True) if not line.startswith(_LEGACY_ID_LINES)]
    if len(kept) < len(text.splitlines()):
        _write_atomically(path, "".join(kept))


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{uuid.uuid4().hex}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def confusion_matrix(truth: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int) -> np.ndarray:
    """(n, n) counts: rows are the true labels, columns the model's answers."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def _confusion_figure(data: ReportData):
    panels = [(title, m) for title, m in data.confusion.items() if m.sum() > 0]
    if not panels:
        return None
    from matplotlib.figure import Figure

    size = 4.2 if len(data.labels) <= 10 else 6.0
    figure = Figure(figsize=(size * len(panels), size), layout="constrained")
    for index, (title, matrix) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        rows = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
        axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(data.labels))
        axes.set_xticks(ticks, data.labels, rotation=45 if len(data.labels) > 10 else 0, fontsize=7)
        axes.set_yticks(ticks, data.labels, fontsize=7)
        axes.set_xlabel("answer")
        axes.set_ylabel("true label")
        accuracy = np.trace(matrix) / matrix.sum()
        axes.set_title(
            f"Confusion matrix of v{data.candidate_version} on {title}\n"
            f"{accuracy:.2%} right of {matrix.sum()} (rows: true label, columns: answer)",
            fontsize=9,
        )
        _write_counts(axes, matrix, share)
    return figure


def _write_counts(axes, matrix: np.ndarray, share: np.ndarray) -> None:
    """The count in every non-empty cell: the colour shows the share of its row, the number how many
    photos that is. Mistakes in red; white on the dark cells."""
    size = 7 if len(matrix) <= 10 else 5
    for (r, c), count in np.ndenumerate(matrix):
        if not count:
            continue
        colour = "white" if share[r, c] > 0.6 else ("crimson" if r != c else "black")
        axes.text(c, r, str(count), ha="center", va="center", fontsize=size, color=colour)


def _curves_figure(data: ReportData):
    history = {k: v for k, v in data.history.items() if v}
    if not history:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.4), layout="constrained")
    losses = {k: v for k, v in history.items() if "loss" in k}
    scores = {k: v for k, v in history.items() if "loss" not in k}
    for index, (title, curves) in enumerate((("loss", losses), ("accuracy", scores)), start=1):
        axes = figure.add_subplot(1, 2, index)
        for key, values in curves.items():
            axes.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, label=key)
        axes.set_xlabel("epoch")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
        if curves:
            axes.legend(fontsize=7)
    figure.suptitle(
        f"Training {data.model} v{data.candidate_version} from v{data.serving_version}", fontsize=10
    )
    return figure


def _readable_mistakes(mistakes: Sequence[Mistake]) -> list[tuple[Mistake, np.ndarray, str]]:
    """Up to MAX_MISTAKES_SHOWN mistakes as (mistake, thumbnail, SHA-256 of the photo file).

    A photo that cannot be read is left out, not drawn blank: it may have been forgotten meanwhile.
    """
    from PIL import Image

    shown: list[tuple[Mistake, np.ndarray, str]] = []
    for mistake in mistakes:
        if len(shown) == MAX_MISTAKES_SHOWN:
            break
        try:
            data = Path(mistake.path).read_bytes()
            with Image.open(mistake.path) as image:
                image.draft("RGB", (160, 160))
                image.thumbnail((160, 160))
                thumbnail = np.asarray(image.convert("RGB"))
        except OSError as error:
            log.warning("cannot draw a mistake: %s", error.__class__.__name__)
            continue
        shown.append((mistake, thumbnail, hashlib.sha256(data).hexdigest()))
    return shown


def _mistakes_figure(data: ReportData, shown: list[tuple[Mistake, np.ndarray, str]]):
    from matplotlib.figure import Figure

    columns = min(6, len(shown))
    rows = (len(shown) + columns - 1) // columns
    figure = Figure(figsize=(max(5.0, 1.8 * columns), 2.0 * rows + 0.4), layout="constrained")
    for index, (mistake, thumbnail, _) in enumerate(shown, start=1):
        axes = figure.add_subplot(rows, columns, index)
        axes.imshow(thumbnail)
        axes.set_axis_off()
        axes.set_title(f"{mistake.label} → {mistake.predicted} ({mistake.split[:5]})", fontsize=8)
    more = len(data.mistakes) - len(shown)
    figure.suptitle(
        f"Chat photos v{data.candidate_version} still gets wrong (label → answer)"
        + (f"; {more} more" if more > 0 else ""),
        fontsize=9,
    )
    return figure


def _close(figure) -> None:
    figure.clear()
