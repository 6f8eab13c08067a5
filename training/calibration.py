"""Whether a percentage means what it says: expected calibration error and the plots that show it.

`photobot evaluate` reports `ece` for every run and, with `--report DIR`, writes a reliability diagram
and a confusion matrix (with counts) as PNG files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BINS = 10  # equal-width confidence bins, as in Guo et al. (2017)
RELIABILITY_FILE = "reliability.png"
CONFUSION_FILE = "confusion.png"


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: how many answers, their mean confidence, and how many were right."""

    edges: np.ndarray  # BINS + 1 bin edges in [0, 1]
    counts: np.ndarray
    confidence: np.ndarray  # mean confidence per bin (0 where empty)
    accuracy: np.ndarray  # share right per bin (0 where empty)

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted gap between confidence and accuracy."""
        total = int(self.counts.sum())
        if total == 0:
            return 0.0
        return float(np.sum(self.counts * np.abs(self.accuracy - self.confidence)) / total)


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> Reliability:
    confidence = np.clip(np.asarray(confidences, np.float64), 0.0, 1.0)
    right = np.asarray(correct, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=confidence, minlength=bins)
    hits = np.bincount(index, weights=right.astype(np.float64), minlength=bins)
    safe = np.maximum(counts, 1)
    return Reliability(edges, counts, sums / safe, hits / safe)


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    return reliability(confidences, correct).ece


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature T whose softmax(logits / T) gives `truth` the least negative log-likelihood
    (Guo et al., 2017): above 1 a head was too sure, below 1 not sure enough. Answers held out from
    the fit only: on its own training photos every head looks sure. A search over T from 0.05 to 20
    on a log scale (the loss is convex in 1/T), to a relative step of 1%."""
    logits = np.asarray(logits, np.float64)
    truth = np.asarray(truth, np.int64)
    if len(truth) == 0:
        return 1.0

    def loss(temperature: float) -> float:
        scaled = logits / temperature
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[np.arange(len(truth)), truth]))

    candidates = np.exp(np.arange(np.log(0.05), np.log(20.0), 0.01))
    return float(min(candidates, key=loss))


def write_reliability_png(table: Reliability, title: str, path: Path) -> Path:
    """Bars of accuracy per confidence bin against the diagonal, with each bin's count written on it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.add_subplot()
    width = table.edges[1] - table.edges[0]
    centres = table.edges[:-1] + width / 2
    axes.bar(centres, table.accuracy, width=width * 0.95, color="tab:blue", label="accuracy")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for x, count, accuracy in zip(centres, table.counts, table.accuracy, strict=True):
        if count:
            axes.text(x, accuracy + 0.02, str(int(count)), ha="center", fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.08)
    axes.set_xlabel("confidence the bot gave")
    axes.set_ylabel("share of those answers that were right")
    axes.set_title(f"{title}\nexpected calibration error {table.ece:.2%} over {int(table.counts.sum())}")
    axes.legend(loc="upper left", fontsize=8)
    figure.savefig(path, dpi=110)
    return path


def write_confusion_png(
    truths: Sequence[str], answers: Sequence[str], title: str, path: Path, *, rows: Sequence[str] = ()
) -> Path:
    """A confusion matrix with the count in every non-empty cell: true labels down, answers across.

    Answers that are not labels (`unsure`, `not recognised`) get their own columns.
    """
    from matplotlib.figure import Figure

    row_labels = list(rows) or sorted(set(truths))
    columns = row_labels + sorted(set(answers) - set(row_labels))
    matrix = np.zeros((len(row_labels), len(columns)), np.int64)
    for truth, answer in zip(truths, answers, strict=True):
        matrix[row_labels.index(truth), columns.index(answer)] += 1
    size = max(4.0, 0.45 * len(columns) + 2)
    figure = Figure(figsize=(size, max(3.5, 0.45 * len(row_labels) + 2)), layout="constrained")
    axes = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    axes.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    axes.set_xlabel("answer")
    axes.set_ylabel("true label")
    for (r, c), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if share[r, c] > 0.6 else "black"
            axes.text(c, r, str(count), ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=110)
    return path
