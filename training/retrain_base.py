"""What every model's retraining step is given and gives back: options, the step's base, its result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.catalogue import ModelSpec
from inference.model_store import ModelVersion
from storage import LabelledExample
from training import gate
from training.chat_examples import MAX_CHAT_WEIGHT, within_share
from training.jobs import JobProgress
from training.report import ReportData
from training.retrain_settings import RetrainSettings


@dataclass(frozen=True)
class RetrainOptions:
    model: str
    job_id: int | None = None  # the job the bot queued; None: the command line creates one
    force: bool = False  # train even with fewer new labels than Settings.retrain_min_new_labels
    limit: int | None = None  # digits: MNIST training digits used; flowers: base photos per class
    test_limit: int | None = None  # digits: first N MNIST test digits for the gate (None: all 10,000)
    epochs: int | None = None  # None: 2 for digits, up to 300 (early stopping) for flowers
    chat_share: float = 0.15  # of the training weight, chat photos' at most
    max_chat_weight: float = MAX_CHAT_WEIGHT  # what one chat example may weigh, in base examples
    learning_rate: float | None = None  # None: 3e-4 for digits, 1e-4 for the (warm-started) flower head
    batch_size: int = 128
    augment: bool | None = None  # digits; None: as the serving version was trained (meta "augmented")
    seed: int = 0
    requested_by: int | None = None  # who asked (recorded with the model event)
    worker: str | None = None  # the `photobot worker` that claimed the job and started this process


@dataclass
class TrainingResult:
    candidate: ModelVersion
    base: gate.SetScore
    chat: gate.SetScore
    also: tuple[gate.SetScore, ...] = ()  # further fixed base sets held to the same margin
    learned: tuple[
        gate.SetScore, ...
    ] = ()  # labels the serving version has not: held-out chat photos of each
    held_out_per_label: str = ""  # a taught model's: `dog 3/3, cat 2/3`, for the gate's reason
    # A taught model's candidate is judged against the serving version only when one with the same
    # labels serves; otherwise by the first version's rule (`training.retrain_taught`).
    against_serving: bool = True


class Retrainer:
    """A model's retraining step: given the job's settings, options, progress and report, `run` it.

    One step serves every model of its kind: `spec`, the model's catalogue entry, says which model
    (its name in the store) and where its base data is (its `dataset`).
    """

    def __init__(
        self,
        settings: RetrainSettings,
        options: RetrainOptions,
        progress: JobProgress,
        serving: ModelVersion,
        report: ReportData,
        spec: ModelSpec,
    ) -> None:
        self.settings, self.options, self.progress = settings, options, progress
        self.serving, self.report, self.spec = serving, report, spec

    def run(self, examples: list[LabelledExample]) -> TrainingResult:
        raise NotImplementedError

    def drop(self, reason: str) -> None:
        """Count one chat photo left out, by why."""
        self.report.dropped[reason] = self.report.dropped.get(reason, 0) + 1

    def within_share(self, items: list, example_of: Any) -> list:
        """The photos that could be read, cut again to each person's share (see chat_examples)."""
        return within_share(items, example_of, self.settings.rules, self.report.dropped)

    def options_meta(self) -> dict[str, Any]:
        """The options a candidate was made with, for its meta.json (not who asked, not the job)."""
        return {k: v for k, v in self.options.__dict__.items() if k not in ("job_id", "requested_by")}


def accuracy(right: np.ndarray) -> float | None:
    """The share of True, or None for an empty set (nothing to compare)."""
    return float(np.mean(right)) if len(right) else None
