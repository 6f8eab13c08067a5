"""What a retrain job looks like in the chat: its progress message, time left, failure and busy texts.

The watcher (`bot.retraining`, `bot.retrain_workers`) reads a job's row from the jobs table and edits one
message with `progress_text`; everything here is a pure function of that row, in the admin's language.
"""

from __future__ import annotations

import contextlib
import math
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.texts import text

if TYPE_CHECKING:
    from storage.records import RetrainJob

CAPTIONS = ("confusion", "curves", "mistakes")  # the report's pictures (training.report), by file name
BAR_WIDTH = 20
STAGES = ("loading", "preprocessing", "training", "evaluating", "report")  # texts: stage_<name>


@dataclass
class TimeLeft:
    """How long a job has left, from the rate it kept over its whole training stage so far.

    Stages run at very different speeds (loading a few seconds for 5% of the bar, training minutes for
    70%), so extrapolating the whole job's rate jumped from ~2 min to ~4 min as training began, and
    a rate over a few seconds jitters. Nothing is estimated until training has gone on for
    MIN_SPAN_S and moved the bar: before that there is no rate worth extrapolating from.
    """

    MIN_SPAN_S = 10.0
    _start: tuple[float, float] | None = field(default=None, init=False)  # (time, progress) at first
    _last: tuple[float, float] | None = field(default=None, init=False)

    def observe(self, job: RetrainJob) -> None:
        if job.status != "running" or job.stage not in ESTIMATED_STAGES:
            return
        point = (float(job.updated_at), float(job.progress or 0.0))
        if self._start is None:
            self._start = point
        self._last = point

    def seconds_left(self) -> float | None:
        if self._start is None or self._last is None:
            return None
        span, moved = self._last[0] - self._start[0], self._last[1] - self._start[1]
        if span < self.MIN_SPAN_S or moved <= 0:
            return None
        return (1.0 - self._last[1]) * span / moved


ESTIMATED_STAGES = ("training", "evaluating", "report")  # from training on, the rate says something


def progress_text(job: RetrainJob, seconds_left: float | None = None, *, language: str = "en") -> str:
    """The progress message: stage, epoch, a text bar, accuracy, and (once `TimeLeft` has a rate)
    about how long is left, in the language of the admin who asked."""
    title = text(language, "retrain_title", model=job.model, job=job.id)
    if job.status == "queued":
        waiting = "retrain_waiting_worker" if job.runner == "worker" else "retrain_starting"
        return f"{title}\n{text(language, waiting)}"
    if job.status == "failed":
        return f"{title}\n{text(language, 'retrain_failed_line', error=job.error)}"
    if job.status in ("succeeded", "rejected"):
        decision = job.decision if job.decision in ("promote", "reject", "skipped") else None
        outcome = (
            text(language, f"retrain_done_{decision}", version=job.candidate_version)
            if decision
            else text(language, "retrain_done_other", status=job.status)
        )
        return f"{title}\n{progress_bar(1.0)} 100%\n{text(language, 'retrain_finished', outcome=outcome)}"
    detail = job.detail or {}
    stage = stage_name(job.stage, language)
    if detail.get("epoch") and detail.get("epochs") and job.stage == "training":
        stage += text(language, "retrain_epoch", epoch=detail["epoch"], epochs=detail["epochs"])
    fraction = float(job.progress or 0.0)
    lines = [title, text(language, "retrain_stage", stage=stage), f"{progress_bar(fraction)} {fraction:.0%}"]
    if isinstance(detail.get("accuracy"), int | float):
        accuracy = text(language, "retrain_accuracy", accuracy=f"{detail['accuracy']:.1%}")
        if isinstance(detail.get("chat_accuracy"), int | float):
            accuracy += text(language, "retrain_chat_accuracy", accuracy=f"{detail['chat_accuracy']:.1%}")
        lines.append(accuracy)
    if seconds_left is not None:
        lines.append(text(language, "retrain_time_left", left=about(seconds_left, language)))
    return "\n".join(lines)


def failed_text(job: RetrainJob, serving: int | None, language: str = "en") -> str:
    """Why a job failed, and which version keeps serving (a taught model's first job: none)."""
    kept = (
        text(language, "retrain_kept", version=serving)
        if serving is not None
        else text(language, "retrain_none_serving")
    )
    return text(language, "retrain_job_failed", model=job.model, job=job.id, error=job.error, kept=kept)


def stage_name(stage: str | None, language: str = "en") -> str:
    return (
        text(language, f"stage_{stage}") if stage in STAGES else (stage or text(language, "stage_starting"))
    )


def about(seconds: float, language: str = "en") -> str:
    """A time left as people say it: whole minutes, rounded up ("about 3 min"), or under a minute."""
    if seconds < 60:
        return text(language, "retrain_under_minute")
    return text(language, "retrain_minutes", minutes=math.ceil(seconds / 60))


def busy_text(job: RetrainJob, language: str = "en") -> str:
    done = text(language, "retrain_busy_done", percent=f"{job.progress:.0%}") if job.progress else ""
    return text(
        language,
        "retrain_busy",
        status=text(language, f"job_{job.status}"),
        job=job.id,
        model=job.model,
        stage=stage_name(job.stage, language),
        done=done,
    )


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


def caption(stem: str, language: str = "en") -> str:
    """A report picture's title for people; an unknown picture keeps its file name."""
    return text(language, f"caption_{stem}") if stem in CAPTIONS else stem.replace("_", " ")


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
