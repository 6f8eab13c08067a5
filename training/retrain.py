"""The retraining job: base data + the photos people labelled in chat → candidate → gate → report.

Run in its own process (`photobot retrain --model digits|flowers [--job-id N]`), never in the bot's:

1. Claim the job (the bot queued it, or the command line creates one): one job at a time
   (`training.jobs`).
2. Select the chat photos (`training.chat_examples`): storage's labelled set minus negative labels,
   near-duplicates once, the per-user cap and the per-person share applied, held out by person; every
   photo left out is counted in the report. For flowers, labels no model knows are set aside (new
   classes are reported, never silently added); labels admins added (`/addlabel flowers lavender`)
   are learned.
3. Chat photos from fewer people than RetrainSettings.rules.min_contributors (or than the share
   allows), or too few new labelled photos since the last promotion (RetrainSettings.min_new_labels):
   explain and stop; only the second can be forced.
4. The retraining step of the model's kind (`training.retrain_digits` for a digit reader,
   `training.retrain_flowers` for an image classifier, its base photos the catalogue entry's dataset)
   reads the chat photos with the serving code, assembles them with the same base data as
   `photobot train`, fits with the same loop (`training.fit`) and scores candidate and serving
   version on the base test set and the held-out chat photos.
5. The gate (`training.gate`) promotes or rejects; the report (`training.report`) is written.

How much a few chat photos may teach: they are weighed, never oversampled. Every example is seen once
per epoch; a base example weighs 1, and each chat example `chat_weight(n_base, n_chat, chat_share)`:
together the chat examples weigh at most `chat_share` (15%) of the training weight, and each at most
MAX_CHAT_WEIGHT (5) base examples. So 40 chat photos beside 20,000 MNIST digits weigh 5 each, 1% of
the training (a photo that used to be shown 138× per epoch now counts as 5 ordinary examples), while
thousands of them reach the 15% share; the base data, most of the weight, keeps the model from
forgetting. The report says what the chat examples weighed ("weight 5.0 each (1.0% of the training
weight …)"), and the candidate's meta.json keeps it (data.chat_weight).

Any exception or SIGTERM marks the job failed with its error; since promotion is the last, atomic
step, a crash or a kill at any earlier point leaves the serving version untouched (a SIGKILL leaves the
job "running" with a dead pid, which the bot and `Store.fail_abandoned_jobs` mark failed). A job that
a `photobot worker` runs (`--worker`) is held by the worker's lease instead: one that runs out marks it
failed, and a job failed under it checks so before promoting and promotes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, ModelKind, ModelSpec
from inference.model_store import ModelStore, ModelVersion
from inference.taught import MIN_PHOTOS_PER_LABEL, is_taught
from storage import SyncStore
from training import gate
from training.chat_examples import (
    ChatRules,
    ChatSelection,
    chat_weight,
    last_promotion,
    select_chat_examples,
    short_labels,
)
from training.jobs import JobProgress, RetrainError, Stop, claim_job, error_text, sigterm_as_exit
from training.report import Report, ReportData, write_report
from training.retrain_base import Retrainer, RetrainOptions, TrainingResult
from training.retrain_settings import RetrainSettings

log = logging.getLogger(__name__)

__all__ = [
    "ChatRules",
    "ChatSelection",
    "RetrainError",
    "RetrainOptions",
    "RetrainOutcome",
    "RetrainSettings",
    "chat_weight",
    "report_folder",
    "run_retrain",
    "select_chat_examples",
]

# The retraining step of each kind of model (module, class): a catalogue entry is all a model needs.
RETRAINERS = {
    ModelKind.DIGIT_READER: ("training.retrain_digits", "DigitsRetrainer"),
    ModelKind.IMAGE_CLASSIFIER: ("training.retrain_flowers", "FlowersRetrainer"),
}


@dataclass
class RetrainOutcome:
    job_id: int
    model: str
    status: str  # the job's final status: "succeeded", "rejected"
    decision: str  # "promote", "reject" or "skipped"
    reason: str
    serving_version: int | None
    candidate_version: int | None
    report: Report
    metrics: dict[str, Any] = field(default_factory=dict)


def retrainer(spec: ModelSpec) -> type[Retrainer]:
    """The retraining step of the model's kind (imported only when a job runs: it brings Keras)."""
    import importlib

    module, name = RETRAINERS[spec.kind]
    return getattr(importlib.import_module(module), name)


def run_retrain(
    settings: RetrainSettings, options: RetrainOptions, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> RetrainOutcome:
    """Run one job from start to end in this process. `settings` comes from the composition root
    (`photobot.wiring.retrain_settings`).

    Raises RetrainError (the job is then marked failed with its message) or whatever crashed.
    """
    spec = catalogue.get(options.model)
    if spec is None or spec.kind not in RETRAINERS:
        known = [s.name for s in catalogue if s.kind in RETRAINERS]
        raise RetrainError(f"unknown model {options.model!r}; choose from {', '.join(known)}")
    store = SyncStore(settings.database_path, settings.images_dir)
    try:
        job_id = claim_job(store, options.model, options.job_id, options.requested_by, options.worker)
        progress = JobProgress(store, job_id)
        stop = Stop()
        try:
            with sigterm_as_exit(stop):
                outcome = _run(settings, options, spec, store, progress, job_id)
        except BaseException as error:
            message = stop.reason or error_text(error)
            log.error(
                "retrain job %d failed: %s", job_id, message, exc_info=not isinstance(error, RetrainError)
            )
            store.fail_retrain_job(job_id, message)
            _reject_leftovers(settings.model_store(), options.model, job_id, message)
            raise
        return outcome
    finally:
        store.close()


def _reject_leftovers(models: ModelStore, name: str, job_id: int, message: str) -> None:
    """A candidate saved before the job failed must never be served by a later rollback: mark it."""
    for version in models.versions(name):
        if version.meta.get("job_id") == job_id and version.meta.get("status") == "candidate":
            models.update_meta(
                name, version.version, status="rejected", gate={"reason": f"job failed: {message}"}
            )


def _run(
    settings: RetrainSettings,
    options: RetrainOptions,
    spec: ModelSpec,
    store: SyncStore,
    progress: JobProgress,
    job_id: int,
) -> RetrainOutcome:
    started = time.monotonic()
    progress.enter("loading", "reading the labelled photos")
    models = settings.model_store()
    serving = models.active(options.model)
    taught = is_taught(spec)
    if serving is None and not taught:
        raise RetrainError(
            f"no {options.model} version serves yet; train one first (photobot train {options.model})"
        )
    chat = select_chat_examples(store, options.model, settings.rules)
    report = ReportData(
        model=options.model, job_id=job_id, serving_version=serving.version if serving else None
    )
    report.capped, report.dropped = chat.capped, dict(chat.dropped)

    since = last_promotion(store, options.model)
    new = [e for e in chat.examples if e.labelled_at > since]
    if taught and serving is None:  # a first version: what it needs is photos of every label
        short = short_labels(spec.label_names, chat.examples)
        if short and not options.force:
            report.skipped = _too_few_for_a_first_version(spec, short, settings.rules)
            return _finish_skipped(store, job_id, options, serving, report, settings, started)
    elif len(new) < settings.min_new_labels and not options.force:
        report.skipped = _too_few_new_labels(len(new), settings.min_new_labels, options.model, since > 0)
        return _finish_skipped(store, job_id, options, serving, report, settings, started)
    if chat.refused is not None:  # not even when forced: this rule is what keeps one account out
        report.skipped = chat.refused
        return _finish_skipped(store, job_id, options, serving, report, settings, started)

    if taught:
        from training.retrain_taught import TaughtRetrainer

        step: Retrainer = TaughtRetrainer(settings, options, progress, serving, report, spec)
    else:
        assert serving is not None
        step = retrainer(spec)(settings, options, progress, serving, report, spec)
    result = step.run(chat.examples)

    progress.enter("report", "deciding and writing the report")
    decision = _decide(settings, spec, serving, result)
    if taught:
        _check_still_taught(store, options.model)
    report.candidate_version = result.candidate.version
    report.decision = decision
    report.seconds = time.monotonic() - started
    folder = report_folder(settings, options.model, job_id)
    written = write_report(report, folder)  # before promoting: the switch is the job's last step
    models.update_meta(options.model, result.candidate.version, report=str(written.folder))
    _check_still_running(store, job_id)
    final, _ = gate.apply(
        models,
        options.model,
        result.candidate.version,
        serving.version if serving else None,
        decision,
        events=store,
        job_id=job_id,
        actor=options.requested_by,
    )
    if final != decision:  # the serving version changed while the job ran: say so in the report
        report.decision = decision = final
        written = write_report(report, folder)
    metrics = {
        "scores": [score.__dict__ for score in decision.scores],
        "report_dir": str(written.folder),
        "report_images": [str(p) for p in written.images],
        "chat_used": sum(report.used_per_label.values()),
        "seconds": round(report.seconds, 1),
    }
    status = "succeeded" if decision.promote else "rejected"
    store.finish_retrain_job(
        job_id,
        status=status,
        metrics=metrics,
        candidate_version=result.candidate.version,
        decision="promote" if decision.promote else "reject",
        reason=decision.reason,
    )
    return RetrainOutcome(
        job_id=job_id,
        model=options.model,
        status=status,
        decision="promote" if decision.promote else "reject",
        reason=decision.reason,
        serving_version=serving.version if serving else None,
        candidate_version=result.candidate.version,
        report=written,
        metrics=metrics,
    )


def _decide(
    settings: RetrainSettings,
    spec: ModelSpec,
    serving: ModelVersion | None,
    result: TrainingResult,
) -> gate.GateDecision:
    """The usual gate; a taught model's first version is judged against a nearest-centroid baseline
    and chance instead (`training.retrain_taught`), and its report says the held-out accuracy per label."""
    if not is_taught(spec):
        return gate.decide(
            result.base,
            result.chat,
            settings.gate_margin,
            also=result.also,
            learned=result.learned,
            n_labels=len(result.candidate.labels),
        )
    from training.retrain_taught import first_version_decision

    per_label = result.held_out_per_label
    if serving is None or not result.against_serving:
        return first_version_decision(result.base, len(spec.labels), per_label)
    decision = gate.decide(result.base, result.chat, settings.gate_margin, also=result.also)
    return dataclasses.replace(decision, reason=f"{decision.reason}; held out per label: {per_label}")


def _check_still_running(store: SyncStore, job_id: int) -> None:
    """A job failed under it (its worker's lease ran out: the worker was taken for dead) promotes
    nothing: whoever failed it has told the admin so."""
    job = store.get_retrain_job(job_id)
    if job is None or job.status != "running":
        raise RetrainError(
            f"the job was {job.status if job else 'deleted'} while it ran; nothing was promoted"
        )


def _check_still_taught(store: SyncStore, name: str) -> None:
    """A taught model deleted while its job ran gets no version: the job fails and says why."""
    if name not in {model.name for model in store.taught_models()}:
        raise RetrainError(f"{name} was deleted while the job ran; nothing was promoted")


def _too_few_for_a_first_version(spec: ModelSpec, short: dict[str, int], rules: ChatRules) -> str:
    have = ", ".join(f"{label} {count}" for label, count in short.items())
    return (
        f"a first version of {spec.name} needs at least {MIN_PHOTOS_PER_LABEL} photos of each label, "
        f"from at least {rules.people_needed} people; usable so far: {have}."
    )


def _too_few_new_labels(new: int, needed: int, model: str, promoted: bool) -> str:
    """Why a job without enough new labels did nothing, as a person would say it (`promoted`: whether
    a version of the model was ever promoted, after which labels count as new)."""
    since = "since the last promotion" if promoted else "yet"
    if new == 0:
        found = f"no photos have been labelled in chat {since}"
    else:
        have = "photos have" if new != 1 else "photo has"
        found = f"only {new} {have} been labelled in chat {since}"
    return (
        f"{found}; retraining needs at least {needed}. "
        f"To retrain anyway: /retrain {model} force (or photobot retrain --model {model} --force)."
    )


def _finish_skipped(
    store: SyncStore,
    job_id: int,
    options: RetrainOptions,
    serving: ModelVersion | None,
    report: ReportData,
    settings: RetrainSettings,
    started: float,
) -> RetrainOutcome:
    report.seconds = time.monotonic() - started
    written = write_report(report, report_folder(settings, options.model, job_id))
    reason = report.skipped or ""
    metrics = {"report_dir": str(written.folder), "report_images": [], "seconds": round(report.seconds, 1)}
    store.finish_retrain_job(job_id, status="succeeded", metrics=metrics, decision="skipped", reason=reason)
    log.info("retrain job %d: nothing to do: %s", job_id, reason)
    return RetrainOutcome(
        job_id,
        options.model,
        "succeeded",
        "skipped",
        reason,
        serving.version if serving else None,
        None,
        written,
        metrics,
    )


def report_folder(settings: RetrainSettings, model: str, job_id: int) -> Path:
    return settings.data_dir / "reports" / f"{model}-job{job_id}"
