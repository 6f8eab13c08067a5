"""Retrain the flower head: cached backbone features of base and chat photos → head → detector → candidate.

The base photos, their split, their cached features and the head's fit loop are those of
`photobot train flowers` (`training.train_flowers`); what is new here: the chat photos (read by the
serving code, labels no model knows set aside and reported, each weighed within the bound of
`training.chat_examples`), a head warm-started from the serving one
with small steps, and the held-out chat photos scored beside the base test split.

Labels added from the chat (`/addlabel flowers lavender`: the catalogue entry's `added`) are learned
once each has MIN_PHOTOS_PER_LABEL usable photos: its own output, fitted first with the others held
(`training.new_labels`), and the ImageNet classes of its photos for the refusal. The gate compares
both versions on the labels the serving one has, and holds each new label to its held-out chat
photos (`training.gate`). A label removed from the chat (`/dellabel`) loses its output.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.model_store import MODEL_FILE, ModelVersion
from storage import LabelledExample
from training import gate
from training.chat_examples import chat_weight, read_photo, record_weight, short_labels, usage, weighted
from training.jobs import RetrainError
from training.report import Mistake, confusion_matrix
from training.retrain_base import Retrainer, TrainingResult, accuracy

if TYPE_CHECKING:
    from training.flower_data import Photo, Split

log = logging.getLogger(__name__)

FLOWERS_EPOCHS = 300  # an upper bound: early stopping on the base validation split decides
FLOWERS_LEARNING_RATE = 1e-4  # the head is warm-started from the serving version's


class FlowersRetrainer(Retrainer):
    """Refit an image classifier's head and its refusal detector on cached features of base + chat photos
    (flowers, or any model of that kind in the catalogue: its base photos are its entry's `dataset`)."""

    def run(self, examples: list[LabelledExample]) -> TrainingResult:
        from training.flower_data import BottleneckCache, bottlenecks
        from training.flower_model import FlowerHead, version_backbone
        from training.train_flowers import cache_key, feature_arrays, head_answers

        options, progress, report = self.options, self.progress, self.report
        serving_head = FlowerHead.load(self._head_file())
        known = list(self.serving.labels)  # what the serving version answers
        wanted = list(self.spec.labels_for(known))  # with the labels added or removed in the chat

        report.new_classes = dict(sorted(Counter(e.label for e in examples if e.label not in wanted).items()))
        if report.new_classes:
            report.dropped["label of a class the model does not have"] = sum(report.new_classes.values())
        progress.enter("preprocessing", "reading the chat photos")
        chat_photos, chat_used = read_chat_photos(self, [e for e in examples if e.label in wanted])
        pairs = self.within_share(list(zip(chat_photos, chat_used, strict=True)), lambda pair: pair[1])
        labels = self._learnable(wanted, known, [e for _, e in pairs])
        pairs = [(px, e) for px, e in pairs if e.label in labels]
        chat_pixels, chat_used = [px for px, _ in pairs], [e for _, e in pairs]
        report.labels = labels
        usage(report, chat_used)
        new = [label for label in labels if label not in known]

        progress.enter("preprocessing", f"features of {len(chat_used)} chat photos and the base photos")
        config = self._config()
        base = self._base_photos(labels, config)
        # The serving version's own backbone (a fine-tuned one's tuned top included): the candidate keeps
        # it, and its features are cached under its name.
        backbone = version_backbone(self.serving)
        cache = BottleneckCache(
            self.settings.data_dir / "cache" / "bottlenecks", cache_key(self.serving.meta.get("backbone"))
        )
        extract = backbone.predict_on_batch

        def note(done: int, total: int) -> None:
            progress.within(0.2 + 0.6 * done / max(1, total), message=f"features: {done}/{total} computed")

        everything = [p for split in base.values() for p in split] + chat_pixels
        by_digest = dict(
            zip(
                (item.digest for item in everything),
                bottlenecks(everything, cache, extract, progress=note).features,
                strict=True,
            )
        )

        train, validation, test = (
            feature_arrays(base[name], labels, by_digest) for name in ("train", "validation", "test")
        )
        chat_train, chat_val = (
            feature_arrays(
                [px for px, e in pairs if e.split == split],
                labels,
                by_digest,
                [e.label for _, e in pairs if e.split == split],
            )
            for split in ("train", "validation")
        )

        weight = chat_weight(len(train[0]), len(chat_train[0]), options.chat_share, options.max_chat_weight)
        record_weight(report, len(train[0]), len(chat_train[0]), weight)
        training_set = weighted(train, chat_train, weight)
        checked = validation if len(validation[0]) else train
        mirrored = self._mirrored(
            [(px, e) for px, e in pairs if e.split == "train" and e.label in new], labels, cache, extract
        )
        start, detector_set = self._start(serving_head, known, labels, training_set, mirrored, config)
        if new and not any(e.label in known and e.split == "train" for e in chat_used):
            # The chat taught only the new labels: the outputs the model had have nothing to learn, and
            # refitting them would only re-roll their test answers (measured: one flower in 302).
            (kernel, bias), history = start, dict(self.new_label_history)
        else:
            progress.enter(
                "training",
                f"head on {len(train[0])} base + {len(chat_train[0])} chat photos of weight {weight:.1f}",
            )
            (kernel, bias), history = self._fit_head(training_set, checked, chat_val, config, labels, start)
        head, detector_meta = self._with_detector(
            kernel, bias, detector_set[0], detector_set[1], checked, config, cache, extract
        )

        progress.enter("evaluating", "scoring serving and candidate heads")
        names = np.array(labels)
        served = np.array(known)

        def score(name: str, title: str, x: np.ndarray, y: np.ndarray) -> gate.SetScore:
            """Both heads on the photos of labels the serving version knows, compared by label."""
            mask = np.isin(names[y], served) if len(y) else np.zeros(0, bool)
            truth, x = names[y][mask], x[mask]
            return gate.SetScore(
                name,
                title,
                len(truth),
                accuracy(served[head_answers(serving_head, x)] == truth),
                accuracy(names[head_answers(head, x)] == truth),
            )

        base_score = score(gate.BASE, f"{self.spec.name} test split", *test)
        chat_score = score(gate.CHAT, "held-out chat photos", *chat_val)
        learned = tuple(
            gate.SetScore(
                f"new_{label}",
                f"held-out chat photos of {label}",
                int(np.sum(chat_val[1] == labels.index(label))),
                None,
                accuracy(
                    head_answers(head, chat_val[0][chat_val[1] == labels.index(label)]) == labels.index(label)
                ),
            )
            for label in new
        )
        report.history = history
        report.confusion = {
            f"{self.spec.name} test split": confusion_matrix(
                test[1], head_answers(head, test[0]), len(labels)
            )
        }
        if len(chat_val[1]):
            report.confusion["held-out chat photos"] = confusion_matrix(
                chat_val[1], head_answers(head, chat_val[0]), len(labels)
            )
        if chat_pixels:
            answers = head_answers(head, np.stack([by_digest[px.digest] for px in chat_pixels]))
            report.mistakes = [
                Mistake(e.path, e.label, labels[int(a)], e.split)
                for e, a in zip(chat_used, answers, strict=True)
                if labels[int(a)] != e.label
            ]
        with_base = {photo.label for split in base.values() for photo in split}
        only_chat = {
            label: chat_train[0][chat_train[1] == index]
            for index, label in enumerate(labels)
            if label not in with_base
        }
        candidate = self._save(
            backbone,
            head,
            detector_meta,
            history,
            len(train[0]),
            weight,
            chat_used,
            config,
            labels,
            only_chat,
        )
        return TrainingResult(candidate, base_score, chat_score, learned=learned)

    def _learnable(self, wanted: list[str], known: list[str], used: list[LabelledExample]) -> list[str]:
        """The labels this version learns: every label it keeps, and each label added in the chat
        once it has MIN_PHOTOS_PER_LABEL usable photos (the others wait, and the report says so)."""
        self.report.waiting = short_labels((name for name in wanted if name not in known), used)
        return [label for label in wanted if label not in self.report.waiting]

    def _start(self, serving_head, known, labels, training_set, mirrored, config):
        """The serving head's outputs for `labels`, each new label's fitted with the others held on
        the training set with the mirror images of its photos, balanced (`training.new_labels`); and
        the examples the refusal's class centres are fitted on (the new labels' mirror images too)."""
        from training.new_labels import NEW_LABEL_L2, fit_new_outputs, new_label_set, start_head

        start = start_head(serving_head.kernel, serving_head.bias, known, labels)
        new = [i for i, label in enumerate(labels) if label not in known]
        self.new_label_history: dict[str, list[float]] = {}
        if not new:
            return start, training_set
        self.progress.enter("training", f"the outputs of {', '.join(labels[i] for i in new)}")
        balanced = new_label_set(training_set, new, mirrored)
        start, losses = fit_new_outputs(balanced, start, new, NEW_LABEL_L2)
        self.new_label_history = {"new label loss (every 10 steps)": losses}
        return start, balanced

    def _mirrored(self, pairs, labels, cache, extract) -> tuple[np.ndarray, np.ndarray]:
        """Features of the mirror images of these chat photos ((pixels, example) pairs) and their label
        indices, from the cache the bot fills when a taught photo arrives (`training.taught_features`)
        or computed now."""
        from training.flower_data import BottleneckCache, Pixels, bottlenecks
        from training.taught_features import MIRRORED

        if not pairs:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        items = [Pixels(px.digest, np.ascontiguousarray(px.pixels[:, ::-1]), px.source) for px, _ in pairs]
        mirrors = BottleneckCache(cache.folder.parent, cache.folder.name + MIRRORED)
        indices = np.array([labels.index(e.label) for _, e in pairs])
        return bottlenecks(items, mirrors, extract).features, indices

    def _head_file(self) -> Path:
        """The serving head, if it can be retrained from cached features of its backbone: the package's
        ImageNet one, or that with a top fine-tuned by `photobot train --fine-tune`."""
        from training.effnet_lite0 import backbone_id
        from training.flower_model import HEAD_FILE, is_package_backbone

        head_file = self.serving.path / HEAD_FILE
        if not head_file.is_file():
            raise RetrainError(
                f"{self.spec.name} v{self.serving.version} has no {HEAD_FILE}: its head cannot be retrained"
            )
        if not is_package_backbone(self.serving.meta.get("backbone")):
            raise RetrainError(
                f"{self.spec.name} v{self.serving.version} was trained on another backbone "
                f"({self.serving.meta.get('backbone')}) than the installed package's ({backbone_id()}); "
                f"retrain it with photobot train {self.spec.name}"
            )
        return head_file

    def _config(self):
        from training.flower_refusal import kind_of
        from training.train_flowers import FlowerConfig

        known = FlowerConfig.__dataclass_fields__
        saved = {k: v for k, v in (self.serving.meta.get("config") or {}).items() if k in known}
        config = FlowerConfig(**saved)
        overrides: dict[str, Any] = {
            "epochs": self.options.epochs or FLOWERS_EPOCHS,
            "seed": self.options.seed,
            # The head starts from the serving one: small steps (measured: 1e-3 re-rolled the test split).
            "learning_rate": self.options.learning_rate or FLOWERS_LEARNING_RATE,
            "ood": kind_of(self.serving.meta.get("ood") or {}),  # a retrain keeps the version's detector
        }
        return FlowerConfig(**{**config.__dict__, **overrides})

    def _base_photos(self, labels: list[str], config: Any) -> dict[Split, list[Photo]]:
        from training.flower_data import find_photo_folder, list_photos, split_photos

        if self.spec.dataset is None:
            raise RetrainError(
                f"{self.spec.name} names no dataset in the catalogue: nothing to retrain it on"
            )
        root = find_photo_folder(self.settings.datasets, self.settings.data_dir, self.spec.dataset)
        photos = [p for p in list_photos(root).photos if p.label in labels]
        if self.options.limit:
            per_class: Counter = Counter()
            limited = []
            for photo in photos:
                if per_class[photo.label] < self.options.limit:
                    per_class[photo.label] += 1
                    limited.append(photo)
            photos = limited
        return split_photos(photos, config.validation_percent, config.test_percent)

    def _fit_head(self, train, validation, chat_val, config, labels, start):
        """The head's shared fit loop (`train_flowers.train_head`), from the serving head's weights
        (`start`: kernel and bias, with the new labels' outputs already fitted).

        Starting from the serving head, not from scratch, the candidate moves only as far as the chat
        photos (and early stopping on the base validation split) ask, which keeps the base test
        accuracy where it was instead of re-rolling it.
        """
        from training.train_flowers import train_head

        kernel, bias, fitted = train_head(
            train,
            validation,
            len(labels),
            config,
            start=start,
            progress=self.progress,
            measure={"base_validation_accuracy": validation, "chat_validation_accuracy": chat_val},
        )
        history = {k: v for k, v in fitted.history.items() if k != "val_loss"}
        return (kernel, bias), history  # the "not a flower" detector is fitted next

    def _with_detector(self, kernel, bias, x, y, calibration, config, cache, extract):
        """The head with its "not a flower" detector refitted on these photos, of the serving
        version's kind (`training.flower_refusal`), and the detector's meta["ood"]."""
        from training.datasets import find_mnist
        from training.flower_data import bottlenecks
        from training.flower_model import FlowerHead
        from training.flower_refusal import fit_detector, kind_of
        from training.numpy_fit import softmax
        from training.train_flowers import non_flower_sets

        # The same calibration photos as `photobot train flowers` (drawn only if not cached yet).
        mnist_file = find_mnist(self.settings.datasets, self.settings.data_dir)
        others = [item for _, item in non_flower_sets(config, mnist_file)["calibration"]]
        detector = fit_detector(
            kind_of(self.serving.meta.get("ood") or {}),
            (x, y),
            bias.shape[0],
            calibration[0],
            softmax(calibration[0] @ kernel + bias).max(axis=1),
            bottlenecks(others, cache, extract).features,
            rank=config.ood_rank,
            keep_flowers=config.keep_flowers,
            other_pass=config.other_pass,
        )
        return FlowerHead(kernel=kernel, bias=bias, ood=detector.params), detector.meta

    def _save(
        self, backbone, head, detector_meta, history, n_base, weight, chat_used, config, labels, only_chat
    ) -> ModelVersion:
        """Save the candidate. `only_chat`: each label with no base photos (added from the chat), and
        the features of its training photos, whose ImageNet classes its refusal accepts."""
        from dataclasses import asdict

        from training.effnet_lite0 import imagenet_head
        from training.flower_model import HEAD_FILE, assemble_flower_model
        from training.imagenet_evidence import imagenet_probabilities
        from training.new_labels import imagenet_rule as with_learned
        from training.new_labels import learned_classes

        keep = ("preprocessing", "backbone", "fine_tuned", "outputs")
        meta: dict[str, Any] = {k: v for k, v in self.serving.meta.items() if k in keep}
        # The ImageNet evidence of the refusal is about the backbone and the base photos, which a
        # retrain keeps: the candidate keeps the serving version's rule and its ImageNet output, with
        # the classes of the labels learned from the chat. (A fine-tuned backbone has the rule only
        # when it was tuned to keep the ImageNet head's answers: `--fine-tune-keep-imagenet`.)
        imagenet_rule = (self.serving.meta.get("ood") or {}).get("imagenet")
        imagenet = imagenet_head() if imagenet_rule else None
        if imagenet_rule and imagenet is not None:
            learned = {
                label: learned_classes(imagenet_probabilities(x, *imagenet)) for label, x in only_chat.items()
            }
            imagenet_rule = with_learned(imagenet_rule, learned)
        meta.update(
            {
                "labels": list(labels),
                "ood": {**detector_meta, **({"imagenet": imagenet_rule} if imagenet_rule else {})},
                "parent": self.serving.version,
                "status": "candidate",
                "job_id": self.report.job_id,
                "history": history,
                "config": asdict(config),
                "data": {
                    "base_train": n_base,
                    "chat_photos": len(chat_used),
                    "chat_train": sum(e.split == "train" for e in chat_used),
                    "chat_validation": sum(e.split == "validation" for e in chat_used),
                    "chat_weight": weight,
                    "new_classes_not_added": self.report.new_classes,
                    "labels_learned": [label for label in labels if label not in self.serving.labels],
                    "added_labels_waiting": self.report.waiting,
                },
                "retrain": self.options_meta(),
                "command": f"photobot retrain --model {self.spec.name} --job-id {self.report.job_id}",
            }
        )
        model = assemble_flower_model(backbone, head, imagenet)
        models = self.settings.model_store()
        with models.new_version(self.spec.name, meta) as staged:
            model.save(staged.path / MODEL_FILE)
            head.save(staged.path / HEAD_FILE)
        return models.get(self.spec.name, staged.published)


def read_chat_photos(step: Retrainer, examples: list[LabelledExample]) -> tuple[list, list[LabelledExample]]:
    """The backbone's input of each chat photo that can be read, and the examples they are; a photo
    that cannot is counted in the step's report and left out."""
    from inference.errors import InferenceError
    from inference.flowers import RESIZE_SHORTER, flower_input
    from training.flower_data import Pixels

    pixels, used = [], []
    for index, example in enumerate(examples):
        step.progress.within(0.2 * index / max(1, len(examples)))
        try:
            image = read_photo(example, step.settings, RESIZE_SHORTER, grayscale=False)
        except (InferenceError, OSError) as error:
            log.warning("chat photo %s cannot be read: %s", example.sha256[:12], error)
            step.drop("photo cannot be decoded")
            continue
        pixels.append(Pixels.of_photo(example.sha256, flower_input(image), example.path))
        used.append(example)
    return pixels, used
