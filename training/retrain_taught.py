"""Build a taught model from the photos people labelled for it: cached features → head → refusal → candidate.

A taught model (`/newmodel`, `inference.taught`) has no base dataset: every photo it learns from was
labelled in the chat. Its photos are read by the serving code and their backbone features cached by the
photo's SHA-256 (`training.flower_data.BottleneckCache`), so a retrain computes features only for photos
it has not seen, and the rest is a fit on cached features.

A head is fitted from scratch on every photo (`training.taught_head`: the unit features beside what the
ImageNet network sees, their balance chosen by cross-validation on those photos). What it would answer
photos it never saw decides:

- a first version (nothing serves yet) is judged with every photo held out in turn
  (`taught_head.cross_validate`) and promoted when it answers as many right as a nearest-centroid
  classifier on the same folds and beats chance by `CHANCE_MARGIN_POINTS`;
- a later version with the serving version's labels goes through the usual gate (`training.gate`):
  a head fitted on the photos their content hashes do not hold out (`HELD_OUT_PERCENT` are) and the
  serving version, both scored on the held-out photos labelled since the serving version was made (it
  was fitted on every photo it had); after a label was added or removed, the first version's rule
  applies again.

Every photo is fitted with its mirror image beside it (features of both cached when the photo arrived:
`training.taught_features`). The version saved is the head on every photo, with a refusal by the
distance to the nearest taught photo, in features and in what the ImageNet network sees, weighed by
the head's confidence (`TaughtRetrainer._taught_detector`). Not the flowers' ImageNet rule: it would
take the ImageNet classes a dozen photos of a broad label land on for the label's, and refuse every
other breed of it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from inference.catalogue import ModelSpec
from inference.model_store import MODEL_FILE, ModelVersion
from inference.taught import MIN_PHOTOS_PER_LABEL
from storage import LabelledExample
from training import gate
from training.chat_examples import short_labels
from training.jobs import JobProgress, RetrainError
from training.report import Mistake, ReportData, confusion_matrix
from training.retrain_base import Retrainer, RetrainOptions, TrainingResult, accuracy
from training.retrain_flowers import read_chat_photos
from training.retrain_settings import RetrainSettings
from training.taught_head import FOLDS, REFUSAL_REPEATS, HeldOut, folds

log = logging.getLogger(__name__)

HELD_OUT_PERCENT = 25  # of each label's photos, by content hash
CHANCE_MARGIN_POINTS = 30.0  # a first version must beat guessing by this much on held-out photos
CROSS_VALIDATED = f"chat photos, each held out in turn ({REFUSAL_REPEATS} shuffles of {FOLDS} folds)"
CALIBRATION_PHOTOS = 100  # synthetic non-photos that place the refusal (cached after the first job)


def held_out(sha256: str, percent: int = HELD_OUT_PERCENT) -> bool:
    """Whether a photo is held out: its hash alone decides, so it never moves as more photos arrive."""
    return int(sha256[8:16], 16) % 100 < percent


@dataclass(frozen=True)
class TaughtFit:
    """A head on x = [u, w·√p] / √(1 + w²) (`training.taught_head`) and how it was chosen."""

    kernel: np.ndarray
    bias: np.ndarray
    weight: float  # w, the ImageNet half's weight
    weight_scores: dict[float, float]  # cross-validated accuracy of each w tried
    losses: list[float]


@dataclass(frozen=True)
class TaughtRefusal:
    """What the saved version refuses by: the taught photos it compares with and where it draws the line."""

    head: Any  # training.flower_model.FlowerHead: the fit's kernel and bias
    photos: Any  # training.taught_head.TaughtPhotos
    thresholds: Any  # training.ood.Thresholds
    temperature: float  # the shown percentages' calibration, fitted on the held-out answers


@dataclass(frozen=True)
class Judgement:
    """What a candidate is judged on: the gate's score, and each judged photo's label and answer."""

    score: gate.SetScore
    truth: np.ndarray  # label indices of the judged photos
    answers: np.ndarray  # the candidate's answer to each (held out from its fit)
    photos: list[tuple[Any, LabelledExample]]
    losses: list[float]  # the judged fit's training curve
    split_counts: dict[str, int]  # for the report: photos fitted on and judged on


class TaughtRetrainer(Retrainer):
    """Fit a taught model's head on cached features of its chat photos (first version or later)."""

    def __init__(
        self,
        settings: RetrainSettings,
        options: RetrainOptions,
        progress: JobProgress,
        serving: ModelVersion | None,
        report: ReportData,
        spec: ModelSpec,
    ) -> None:
        # A first version has nothing serving: `previous` says so, where the other steps' `serving` cannot.
        super().__init__(settings, options, progress, serving, report, spec)  # type: ignore[arg-type]
        self.previous = serving

    def run(self, examples: list[LabelledExample]) -> TrainingResult:
        from training.effnet_lite0 import build_backbone, imagenet_head, weights_file
        from training.taught_features import taught_features
        from training.taught_head import ImagenetHead
        from training.torch_weights import read_state_dict
        from training.train_flowers import feature_arrays

        labels = list(self.spec.label_names)
        self.report.labels = labels
        known = [e for e in examples if e.label in labels]
        gone = len(examples) - len(known)
        if gone:
            self.report.dropped["label the model no longer has"] = gone
        self.progress.enter("preprocessing", f"features of {len(known)} chat photos")
        pixels, used = read_chat_photos(self, known)
        pairs = self.within_share(list(zip(pixels, used, strict=True)), lambda pair: pair[1])
        self._check_counts([e for _, e in pairs], labels)
        state = read_state_dict(weights_file())
        backbone = build_backbone(state)
        imagenet = ImagenetHead(*imagenet_head(state))

        def note(done: int, total: int) -> None:
            self.progress.within(0.2 + 0.5 * done / max(1, total), message=f"features: {done}/{total}")

        features, mirrored = taught_features(
            [px for px, _ in pairs],
            self.settings.data_dir / "cache" / "bottlenecks",
            backbone.predict_on_batch,
            note,
        )
        by_digest = dict(zip((px.digest for px, _ in pairs), features, strict=True))
        mirror_of = dict(zip((px.digest for px, _ in pairs), mirrored, strict=True))

        def mirrors(part: list[tuple[Any, LabelledExample]]) -> np.ndarray:
            return np.stack([mirror_of[px.digest] for px, _ in part]) if part else np.zeros((0, 1280))

        def arrays(part: list[tuple[Any, LabelledExample]]) -> tuple[np.ndarray, ...]:
            return feature_arrays([px for px, _ in part], labels, by_digest, [e.label for _, e in part])

        self.report.used_per_label = dict(sorted(Counter(e.label for _, e in pairs).items()))
        self.report.used_per_contributor = dict(Counter(e.contributor for _, e in pairs))
        self.report.chat_weight = 1.0
        config = self._taught_config()
        everything = arrays(pairs)
        train_pairs = [(px, e) for px, e in pairs if not held_out(e.sha256)]
        test_pairs = [(px, e) for px, e in pairs if held_out(e.sha256)]
        # Every version saved is fitted on every photo, held-out ones too: with a dozen photos of a
        # label, a quarter more of them is worth more than anything else (measured: 9 → 12 photos of
        # each of four animal categories, unseen photos 76% → 88% right).
        self.progress.enter("training", f"the head on all {len(everything[1])} photos")
        every_mirrored = mirrors(pairs)
        final = self._fit(everything, every_mirrored, len(labels), imagenet)
        self.progress.enter("evaluating", "each photo held out in turn")
        refusal, cross_validated = self._taught_detector(final, everything, every_mirrored, imagenet)
        previous_head = self._comparable_head(labels)
        if previous_head is None:
            judgement = self._first_judgement(final, cross_validated, everything, pairs)
        else:
            assert self.previous is not None  # a comparable head is the previous version's
            self.progress.enter("evaluating", f"against v{self.previous.version}")
            train = (arrays(train_pairs), mirrors(train_pairs))
            judgement = self._against_serving(previous_head, train, arrays(test_pairs), test_pairs, imagenet)
        self._report(judgement, labels)
        candidate = self._save_taught(
            backbone,
            final,
            refusal,
            imagenet,
            config,
            (len(train_pairs), len(test_pairs)),
            trained_until=max((e.labelled_at for _, e in pairs), default=0.0),
            judged=judgement.score.title,
        )
        return TrainingResult(
            candidate,
            judgement.score,
            gate.SetScore(gate.CHAT, "further chat photos", 0, None, None),
            held_out_per_label=per_label_text(judgement.truth, judgement.answers, labels),
            against_serving=previous_head is not None,
        )

    def _first_judgement(
        self,
        final: TaughtFit,
        cross_validated: HeldOut,
        everything: tuple[np.ndarray, ...],
        pairs: list[tuple[Any, LabelledExample]],
    ) -> Judgement:
        """A first version: every photo held out in turn (`cross_validate`), against a nearest-centroid
        classifier on the same folds. A quarter of a dozen photos a label held out once by their hashes
        is a handful of photos, unevenly shared (one label 8 of its 12, another 1)."""
        n_classes = len(final.bias)
        centroid = centroid_cross_validated(everything, n_classes, seed=self.options.seed)
        score = gate.SetScore(gate.BASE, CROSS_VALIDATED, len(pairs), centroid, cross_validated.right)
        counts = {"train": len(pairs), "held out in turn": len(pairs)}
        return Judgement(score, everything[1], cross_validated.answers, pairs, final.losses, counts)

    def _report(self, judgement: Judgement, labels: list[str]) -> None:
        self.report.split_counts = judgement.split_counts
        self.report.chat_examples = judgement.split_counts["train"]
        self.report.history = {"loss": judgement.losses}
        if len(judgement.truth):
            matrix = confusion_matrix(judgement.truth, judgement.answers, len(labels))
            self.report.confusion = {judgement.score.title: matrix}
        self.report.mistakes = [
            Mistake(e.path, e.label, labels[int(a)], "validation")
            for (_, e), a in zip(judgement.photos, judgement.answers, strict=True)
            if labels[int(a)] != e.label
        ]

    def _comparable_head(self, labels: list[str]) -> Any:
        """The serving version's head when it answers these labels: a later version is judged against
        it; None (nothing serves, or a label was added or removed since) means the first version's rule."""
        if self.previous is None or list(self.previous.labels) != labels:
            return None
        return self._previous_head()

    def _against_serving(
        self,
        previous_head: Any,
        train: tuple[tuple[np.ndarray, ...], np.ndarray],
        test: tuple[np.ndarray, ...],
        test_pairs: list[tuple[Any, LabelledExample]],
        imagenet: Any,
    ) -> Judgement:
        """A later version: a head fitted on the photos not held out by their hashes, and the serving
        version, both scored on the held-out photos labelled since the serving version was made (it was
        fitted on every photo it had, held-out ones too, so only those are new to both). `train` is the
        photos' arrays and their mirror images' features."""
        assert self.previous is not None
        judged = self._fit(train[0], train[1], len(self.previous.labels), imagenet)
        answers = taught_answers(judged.kernel, judged.bias, judged.weight, test[0], imagenet)
        since = float((self.previous.meta.get("data") or {}).get("trained_until", 0.0))
        fresh = np.array([e.labelled_at > since for _, e in test_pairs], dtype=bool)
        score = gate.SetScore(
            gate.BASE,
            f"held-out photos labelled since v{self.previous.version}",
            int(fresh.sum()),
            accuracy(self._previous_answers(previous_head, test[0][fresh], imagenet) == test[1][fresh]),
            accuracy(answers[fresh] == test[1][fresh]),
        )
        counts = {"train": len(train[0][1]), "validation": len(test_pairs)}
        return Judgement(score, test[1], answers, test_pairs, judged.losses, counts)

    def _check_counts(self, used: list[LabelledExample], labels: list[str]) -> None:
        """Enough photos of every label; the error also says which photos were left out and why, since
        `/models` counts every labelled photo (one person's beyond their share among them)."""
        short = short_labels(labels, used)
        if not short:
            return
        have = ", ".join(f"{label} {count}" for label, count in short.items())
        left_out = "; ".join(f"{n} {reason}" for reason, n in self.report.dropped.items() if n)
        raise RetrainError(
            f"{self.spec.name} needs at least {MIN_PHOTOS_PER_LABEL} usable photos of each label; "
            f"it has {have}" + (f" (left out: {left_out})" if left_out else "")
        )

    def _fit(
        self, data: tuple[np.ndarray, ...], mirrored: np.ndarray, n_classes: int, imagenet: Any
    ) -> TaughtFit:
        """The head on these photos' features and their mirror images'; w is chosen by cross-validation
        on the photos (`training.taught_head.choose_weight`)."""
        from training.taught_head import choose_weight, embed, fit_softmax

        weight, scores = choose_weight(data[0], data[1], n_classes, imagenet, seed=self.options.seed)
        config = self._taught_config()
        kernel, bias, losses = fit_softmax(
            embed(np.vstack([data[0], mirrored]), imagenet, weight),
            np.tile(data[1], 2),
            n_classes,
            l2=config.l2,
            steps=config.epochs,
            learning_rate=config.learning_rate,
        )
        return TaughtFit(kernel, bias, weight, scores, losses)

    def _previous_answers(self, head: Any, features: np.ndarray, imagenet: Any) -> np.ndarray:
        """The serving version's answers: a head on the features alone (made before the ImageNet half),
        or on x = [u, w·√p] with its own w."""
        if head.kernel.shape[0] == features.shape[1]:
            from training.train_flowers import head_answers

            return np.asarray(head_answers(head, features), np.int64)
        assert self.previous is not None
        weight = float((self.previous.meta.get("head") or {}).get("imagenet_weight", 0.0))
        return taught_answers(head.kernel, head.bias, weight, features, imagenet)

    def _taught_config(self) -> Any:
        from training.taught_head import L2, LEARNING_RATE, STEPS
        from training.train_flowers import FlowerConfig

        return FlowerConfig(
            epochs=self.options.epochs or STEPS,  # full-batch: one step per epoch
            learning_rate=self.options.learning_rate or LEARNING_RATE,
            dropout=0.0,
            l2=L2,
            seed=self.options.seed,
            calibration_photos=CALIBRATION_PHOTOS,
            evaluation_photos=0,
            package_photos=False,
        )

    def _taught_detector(
        self, fit: TaughtFit, data: tuple[np.ndarray, ...], mirrored: np.ndarray, imagenet: Any
    ) -> tuple[TaughtRefusal, HeldOut]:
        """The refusal (`training.taught_head.TaughtPhotos`, `refusal_score`): a photo is refused when
        its distance to the nearest taught photo (features and ImageNet view) minus CONFIDENCE_WEIGHT ×
        its top probability is beyond what the taught photos themselves score held out
        (`refusal_threshold`: their mean and a spread of their standard deviation; each photo
        against the others, its probability from heads fitted without it). The serving graph
        computes the distance (`assemble_taught_model`); `meta["ood"]["confidence_weight"]` tells the
        answer to subtract.

        With a dozen photos of a broad label (a dozen dog breeds), the class-centre distance of the
        flowers cannot tell a new breed from a teapot (measured: medians 6038 vs 6561, and every
        threshold kept both or refused both).

        Also returns what heads fitted without each photo answered it (`cross_validate`): the
        refusal's held-out confidence, and a first version's judgement.
        """
        from training.calibration import fit_temperature
        from training.flower_model import FlowerHead
        from training.numpy_fit import softmax
        from training.ood import OodParams, Thresholds
        from training.taught_head import (
            TaughtPhotos,
            cross_validate,
            embed,
            refusal_score,
            refusal_threshold,
        )

        x, y = data[0], data[1]
        photos = TaughtPhotos.of([x, mirrored], imagenet)
        joined = embed(x, imagenet, fit.weight)
        config = self._taught_config()
        held = cross_validate(
            [joined, embed(mirrored, imagenet, fit.weight)],
            y,
            len(fit.bias),
            seed=self.options.seed,
            l2=config.l2,
            steps=config.epochs,
            learning_rate=config.learning_rate,
        )
        # The head is less sure than it is right (L2 on unit-length inputs): the percentages it shows
        # are calibrated on the held-out answers (`meta["calibration"]`, applied by the answer). The
        # refusal keeps reading the head's own probabilities, which its rule was chosen on.
        temperature = fit_temperature(held.logits, held.truth[held.photo])
        distance = photos.distance(x, imagenet, own=np.arange(len(y)))
        unsure, reject = refusal_threshold(refusal_score(distance, held.confidence()))
        dims = x.shape[1]
        ood = OodParams(  # kept in the head file for its shape; the served graph has the distance itself
            means=photos.unit.astype(np.float32),
            directions=np.eye(dims, 1, dtype=np.float32),
            variances=np.ones(1, np.float32),
            residual_variance=1.0,
        )
        thresholds = Thresholds(
            unsure_above=unsure,
            reject_above=reject,
            min_confidence=min(
                0.5, float(np.quantile(softmax(joined @ fit.kernel + fit.bias).max(axis=1), 0.01))
            ),
        )
        head = FlowerHead(kernel=fit.kernel, bias=fit.bias, ood=ood)
        return TaughtRefusal(head, photos, thresholds, temperature), held

    def _previous_head(self) -> Any:
        from training.flower_model import HEAD_FILE, FlowerHead

        if self.previous is None or not (self.previous.path / HEAD_FILE).is_file():
            return None
        return FlowerHead.load(self.previous.path / HEAD_FILE)

    def _save_taught(
        self,
        backbone: Any,
        fit: TaughtFit,
        refusal: TaughtRefusal,
        imagenet: Any,
        config: Any,
        counts: tuple[int, int],
        *,
        trained_until: float,
        judged: str,
    ) -> ModelVersion:
        """Save the version: `counts` are the photos its hashes put in training and held out (a later
        version is judged on the held-out ones labelled after `trained_until`, when this version's latest
        photo was labelled); `judged` says on what this one was."""
        from inference.flowers import PREPROCESSING_ID
        from training.effnet_lite0 import backbone_id
        from training.flower_model import HEAD_FILE
        from training.taught_head import (
            CONFIDENCE_WEIGHT,
            HEAD_FEATURES,
            NEAREST_VIEW_WEIGHT,
            REJECT_SPREAD,
            VIEW_TEMPERATURE,
            assemble_taught_model,
        )

        n_train, n_held_out = counts
        meta = {
            "labels": list(self.spec.label_names),
            "preprocessing": PREPROCESSING_ID,
            "backbone": backbone_id(),
            "fine_tuned": False,
            # No ImageNet evidence in the refusal: its rule takes the ImageNet classes a dozen photos of a
            # broad label happen to land on for the label's, and refuses every other breed or species of it.
            "outputs": ["probabilities", "distances"],
            # What the head reads (training.taught_head): x = [u, w·√p] / √(1 + w²).
            "head": {
                "features": HEAD_FEATURES,
                "imagenet_weight": fit.weight,
                "cross_validated": {str(w): round(a, 4) for w, a in fit.weight_scores.items()},
            },
            "ood": {
                # The distance: 2 − 2·cos to the nearest taught photo (or its mirror image) + view_weight ×
                # (1 − cos) of the nearest ImageNet view unit(p^(1/view_temperature)).
                "method": "nearest-photo-and-imagenet-view",
                "view_weight": NEAREST_VIEW_WEIGHT,
                "view_temperature": VIEW_TEMPERATURE,
                # Compared with the thresholds: the distance − confidence_weight × the top probability.
                "confidence_weight": CONFIDENCE_WEIGHT,
                "calibration": "taught photos held out: nearest other photo, top probability without it",
                # reject_above: the mean of their scores + this many of their standard deviations.
                "reject_spread": REJECT_SPREAD,
                **refusal.thresholds.as_meta(),
            },
            # The percentages shown: softmax(logits / temperature); the refusal reads temperature 1.
            "calibration": {
                "temperature": round(refusal.temperature, 4),
                "fitted_on": "the taught photos' held-out answers (10 shuffles of 3 folds)",
            },
            "parent": self.previous.version if self.previous else None,
            "status": "candidate",
            "job_id": self.report.job_id,
            "config": asdict(config),
            # Fitted on every photo; chat_held_out are those a later version is judged on.
            "data": {
                "judged_on": judged,
                "chat_train": n_train,
                "chat_held_out": n_held_out,
                "taught": True,
                "refit_on_all": True,
                "trained_until": trained_until,
            },
            "retrain": self.options_meta(),
            "command": f"photobot retrain --model {self.spec.name} --job-id {self.report.job_id}",
        }
        model = assemble_taught_model(backbone, refusal.head, imagenet, fit.weight, refusal.photos)
        models = self.settings.model_store()
        with models.new_version(self.spec.name, meta) as staged:
            model.save(staged.path / MODEL_FILE)
            refusal.head.save(staged.path / HEAD_FILE)
        return models.get(self.spec.name, staged.published)


def taught_answers(
    kernel: np.ndarray, bias: np.ndarray, weight: float, features: np.ndarray, imagenet: Any
) -> np.ndarray:
    """The label index a head on x = [u, w·√p] gives each row of backbone `features`."""
    from training.taught_head import embed

    if len(features) == 0:
        return np.zeros(0, np.int64)
    return np.asarray((embed(features, imagenet, weight) @ kernel + bias).argmax(axis=1), np.int64)


def nearest_centroid(train: tuple[np.ndarray, ...], x: np.ndarray, n_classes: int) -> np.ndarray:
    """The baseline a first version must match: each photo gets the label of the nearest class mean
    of the L2-normalised training features."""
    if len(x) == 0:
        return np.zeros(0, np.int64)
    features, labels = _unit(train[0]), np.asarray(train[1])
    centroids = np.stack(
        [
            features[labels == c].mean(axis=0) if np.any(labels == c) else np.full(features.shape[1], np.inf)
            for c in range(n_classes)
        ]
    )
    distances = ((_unit(x)[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(distances.argmin(axis=1), np.int64)


def centroid_cross_validated(data: tuple[np.ndarray, ...], n_classes: int, seed: int) -> float | None:
    """The nearest-centroid baseline on the folds `cross_validate` uses (the same seed and shuffles):
    the share of photos it answers right, over every shuffle and fold."""
    features, labels = data[0], np.asarray(data[1], np.int64)
    right = [
        nearest_centroid((features[~held], labels[~held]), features[held], n_classes) == labels[held]
        for held in folds(labels, n_classes, seed, repeats=REFUSAL_REPEATS)
        if held.any()
    ]
    return accuracy(np.concatenate(right)) if right else None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def per_label_text(truth: np.ndarray, answers: np.ndarray, labels: list[str]) -> str:
    """`dog 3/3, cat 2/3`: held-out photos answered right, per label."""
    parts = []
    for index, label in enumerate(labels):
        mask = np.asarray(truth) == index
        parts.append(f"{label} {int(np.sum(np.asarray(answers)[mask] == index))}/{int(mask.sum())}")
    return ", ".join(parts)


def first_version_decision(score: gate.SetScore, n_labels: int, per_label: str) -> gate.GateDecision:
    """Promote a first version whose held-out accuracy matches the nearest-centroid baseline (held in
    `score.serving`) and beats chance by CHANCE_MARGIN_POINTS."""
    chance = 1.0 / max(1, n_labels)
    candidate, centroid = score.candidate, score.serving
    numbers = (
        f"{score.title}: {_percent(candidate)} (nearest centroid {_percent(centroid)}, "
        f"chance {chance:.0%}) on {score.n} photos; per label: {per_label}"
    )
    if candidate is None or score.n == 0:
        return gate.GateDecision(False, f"no {score.title} to judge on", (score,), CHANCE_MARGIN_POINTS)
    if centroid is not None and candidate + 1e-9 < centroid:
        return gate.GateDecision(
            False, f"worse than the nearest-centroid baseline: {numbers}", (score,), CHANCE_MARGIN_POINTS
        )
    if (candidate - chance) * 100 < CHANCE_MARGIN_POINTS:
        return gate.GateDecision(
            False,
            f"not clearly better than chance ({CHANCE_MARGIN_POINTS:g} points needed): {numbers}",
            (score,),
            CHANCE_MARGIN_POINTS,
        )
    return gate.GateDecision(True, numbers, (score,), CHANCE_MARGIN_POINTS)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
