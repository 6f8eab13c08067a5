"""`photobot evaluate --model MODEL|auto (--images DIR | --mnist-test) [--json] [--report DIR]`.

`--images DIR`: accuracy on a folder of labelled photos, one sub-folder per label (`7/`, `2026/`,
`daisy/`; `none/` for photos that must be `not_recognized`). Photos go through the serving engine
exactly as in the bot. An answer counts as right when its label is the folder's name (also when it
is `unsure`, which the bot would ask about), or, in `none/`, when it is `not_recognized`.

`--mnist-test` (digits only): accuracy of the serving digit model on the 10,000 MNIST test digits,
framed as served crops are.

`ece` is the expected calibration error of the answers' confidences (labelled photos; 10 bins): how far
"90% sure" is from being right 90% of the time. `--report DIR` writes a reliability diagram and the
confusion matrix (with counts) there as PNG. A model with no version yet is seeded from the shipped
default first, as the bot does, so every flag works on a fresh install.

With --json the last line is one JSON object:
`{"model", "version", "n", "accuracy", "unsure", "not_recognized", "ece", "per_class": {label: accuracy}}`
(plus `left_out` and `unreadable` when there are such photos)
(`unsure` and `not_recognized` are counts).

A sub-folder that is neither `none/` nor a label the model can answer (`cats/` for the flowers, `daisy/`
for the digit reader) is left out: its photos are not classified and count nowhere, because "right"
has no meaning for them, and counting them as must-refuse would quietly turn a typo (`tulip/`) into
a measure of refusals. The report lists such folders with their photo counts (`left_out`, in the JSON
only when there are any), and a folder with no known label at all is an error.

Evaluating on the photos a model learned from says little about new photos: a folder inside the
datasets' `flower_photos/` (PHOTOBOT_DATASETS) gets a warning on stderr. The progress bar goes to
stderr (see `photobot.commands.progress_bar`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, ModelKind
from inference.taught import is_taught
from photobot.commands import progress_bar
from photobot.errors import UserFacingError
from photobot.settings import Settings

NO_LABEL = "none"
TRAINING_FOLDERS = ("flower_photos",)  # in PHOTOBOT_DATASETS: what the shipped and trained models learned


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help=f"{', '.join(DEFAULT_CATALOGUE.names)}, a taught model, or auto (the router, every model)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--images", type=Path, metavar="DIR", help="labelled photos, one sub-folder per label"
    )
    source.add_argument("--mnist-test", action="store_true", help="the MNIST test set (digits only)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write a reliability diagram and the confusion matrix"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from photobot.wiring import taught_catalogue

    quiet = getattr(args, "quiet", False)
    catalogue = taught_catalogue(settings)
    named = catalogue.named(args.model)  # a model's name (`digits`) or its mode (`digit`)
    if args.model != "auto" and named is None:
        raise UserFacingError(
            f"unknown model '{args.model}'; choose from {', '.join((*catalogue.names, 'auto'))}"
        )
    if named is not None:
        args.model = named.name
    if named is not None and is_taught(named) and _no_version(settings, named.name):
        raise UserFacingError(
            f"no {named.name} model is loaded: no version of it serves yet (teach it photos captioned "
            f"with its labels, then `photobot retrain --model {named.name}`)"
        )
    if args.mnist_test:
        spec = DEFAULT_CATALOGUE.get(args.model)
        if spec is None or spec.kind != ModelKind.DIGIT_READER:
            readers = ", ".join(s.name for s in DEFAULT_CATALOGUE.of_kind(ModelKind.DIGIT_READER))
            raise UserFacingError(f"--mnist-test measures a digit reader: use --model {readers}")
        report, outcomes = _mnist_test(settings, spec.name, quiet=quiet)
    else:
        if not args.images.is_dir():
            raise UserFacingError(f"{args.images}: not a folder (expected one sub-folder per label)")
        import asyncio

        warn_if_training_photos(args.images, settings)
        report, outcomes = asyncio.run(
            evaluate_folder(args.images, args.model, settings, catalogue=catalogue, quiet=quiet)
        )
    if args.report is not None:
        written = write_plots(outcomes, report, args.report)
        print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    _print(report, as_json=args.json)
    return 0


@dataclass(frozen=True)
class Outcome:
    """One photo's truth and answer, as the plots need them."""

    truth: str
    answer: str  # the label answered, or "unsure" / "not recognised" / "unreadable"
    confidence: float
    right: bool
    labelled: bool  # a photo of a label (not of none/): counts for calibration


def calibration_error(outcomes: list[Outcome]) -> float:
    from training.calibration import expected_calibration_error

    scored = [o for o in outcomes if o.labelled and o.answer != "unreadable"]
    return expected_calibration_error([o.confidence for o in scored], [o.right for o in scored])


def write_plots(outcomes: list[Outcome], report: dict, folder: Path) -> list[Path]:
    from training.calibration import (
        CONFUSION_FILE,
        RELIABILITY_FILE,
        reliability,
        write_confusion_png,
        write_reliability_png,
    )

    folder.mkdir(parents=True, exist_ok=True)
    title = f"{report['model']} on {report['n']} photos: accuracy {report['accuracy']:.2%}"
    scored = [o for o in outcomes if o.labelled and o.answer != "unreadable"]
    table = reliability([o.confidence for o in scored], [o.right for o in scored])
    return [
        write_reliability_png(table, title, folder / RELIABILITY_FILE),
        write_confusion_png(
            [o.truth for o in outcomes], [o.answer for o in outcomes], title, folder / CONFUSION_FILE
        ),
    ]


def labelled_photos(folder: Path) -> list[tuple[Path, str]]:
    from photobot.commands.classify import IMAGE_SUFFIXES

    found = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        found += [
            (p, label_dir.name) for p in sorted(label_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not found:
        raise UserFacingError(f"{folder}: no photos in sub-folders (expected one sub-folder per label)")
    return found


def known_label(model: str, label: str, catalogue: Catalogue = DEFAULT_CATALOGUE) -> bool:
    """Whether a sub-folder's name can be scored for `model` (auto: for any model): `none`, or an answer
    the model can give (a label added from the chat too: `/addlabel flowers lavender`)."""
    models = catalogue.names if model == "auto" else (model,)
    return label == NO_LABEL or any(catalogue.knows(name, label) for name in models)


def split_known(
    photos: list[tuple[Path, str]], model: str, folder: Path, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> tuple[list[tuple[Path, str]], dict[str, int]]:
    """The photos whose folder the model can be scored on, and the other folders with their counts."""
    left_out: dict[str, int] = {}
    for _, label in photos:
        if not known_label(model, label, catalogue):
            left_out[label] = left_out.get(label, 0) + 1
    kept = [(path, label) for path, label in photos if label not in left_out]
    if not kept:
        names = ", ".join(f"{label}/" for label in left_out)
        raise UserFacingError(
            f"{folder}: no sub-folder is a label {model} knows ({names}); name each after a label, "
            f"or none/ for photos it must refuse"
        )
    return kept, left_out


def warn_if_training_photos(folder: Path, settings: Settings) -> None:
    """Say so on stderr when the folder is (inside) the photos the models were trained on."""
    where = folder.resolve()
    for datasets in settings.datasets:
        for name in TRAINING_FOLDERS:
            training = (datasets / name).resolve()
            if where == training or where.is_relative_to(training):
                print(
                    f"warning: {folder} is inside the training photos ({training}): the accuracy on "
                    "photos a model learned from is higher than on new photos",
                    file=sys.stderr,
                )
                return


async def evaluate_folder(
    folder: Path,
    model: str,
    settings: Settings,
    *,
    catalogue: Catalogue | None = None,
    quiet: bool = True,
) -> tuple[dict, list[Outcome]]:
    """Every labelled photo through the engine: the report (see the module's docstring), per photo.
    `catalogue`: the models served (default: the built-in ones and those taught in the database)."""
    from photobot.commands.classify import classify_files
    from photobot.wiring import taught_catalogue

    if catalogue is None:
        catalogue = taught_catalogue(settings)
    photos, left_out = split_known(labelled_photos(folder), model, folder, catalogue)
    spec = catalogue.get(model)
    with progress_bar(len(photos), f"evaluating {model}", quiet=quiet) as bar:
        answers = await classify_files(
            [p for p, _ in photos],
            spec.mode if spec else "auto",
            settings,
            catalogue=catalogue,
            on_each=lambda: bar.update(1),
        )
    tallies: dict[str, list[int]] = {}
    unsure = not_recognized = right_total = 0
    failed = []
    outcomes: list[Outcome] = []
    versions: dict[str, int] = {}
    for (path, truth), answer in zip(photos, answers, strict=True):
        tally = tallies.setdefault(truth, [0, 0])
        tally[1] += 1
        if isinstance(answer, Exception):
            failed.append(f"{path}: {answer}")
            outcomes.append(Outcome(truth, "unreadable", 0.0, False, truth != NO_LABEL))
            continue
        if answer.model and answer.version is not None:
            versions[answer.model] = answer.version
        unsure += answer.status == "unsure"
        not_recognized += answer.status == "not_recognized"
        right = answer.status == "not_recognized" if truth == NO_LABEL else answer.label == truth
        tally[0] += right
        right_total += right
        shown = answer.label if answer.status == "ok" else answer.status.replace("_", " ")
        outcomes.append(
            Outcome(truth, shown or "not recognised", answer.confidence, right, truth != NO_LABEL)
        )
    for line in failed[:10]:
        print(f"unreadable: {line}", file=sys.stderr)
    n = len(photos)
    report = {
        "model": model,
        "version": versions.get(model) if model != "auto" else versions,
        "n": n,
        "accuracy": right_total / n,
        "unsure": unsure,
        "not_recognized": not_recognized,
        "ece": calibration_error(outcomes),
        "per_class": {label: right / total for label, (right, total) in sorted(tallies.items())},
    }
    if left_out:
        report["left_out"] = left_out
    if failed:  # counted wrong above; said apart, so a damaged file is not taken for a model's mistake
        report["unreadable"] = len(failed)
    return report, outcomes


def _no_version(settings: Settings, name: str) -> bool:
    from photobot.serving import model_store

    store = model_store(settings)
    try:
        return store.active_version(name) is None
    finally:
        store.close()


def _mnist_test(settings: Settings, name: str, *, quiet: bool = True) -> tuple[dict, list[Outcome]]:
    import numpy as np

    from inference.loading import load_version
    from photobot.serving import seed_models
    from training.datasets import load_mnist
    from training.train_digits import mnist_inputs

    store = seed_models(settings, [name])
    version = store.active(name)
    if version is None:
        raise UserFacingError(f"no active {name} model: run `photobot train {name}` or start the bot once")
    loaded = load_version(version, max_batch=2, padded_sizes=())
    _, _, x_test, y_test = load_mnist(settings.datasets, settings.data_dir)
    x = mnist_inputs(x_test, framed=True)
    chunks = []
    with progress_bar(len(x), f"evaluating {name}", quiet=quiet, unit="digit") as bar:
        for start in range(0, len(x), 1000):
            chunks.append(np.asarray(loaded.run(x[start : start + 1000])))
            bar.update(len(chunks[-1]))
    probabilities = np.concatenate(chunks)
    predicted = np.argmax(probabilities, axis=1)
    confidence = probabilities.max(axis=1)
    right = predicted == y_test
    outcomes = [
        Outcome(str(t), str(p), float(c), bool(r), True)
        for t, p, c, r in zip(y_test, predicted, confidence, right, strict=True)
    ]
    report = {
        "model": name,
        "version": version.version,
        "n": len(y_test),
        "accuracy": float(right.mean()),
        "unsure": 0,
        "not_recognized": 0,
        "ece": calibration_error(outcomes),
        "per_class": {str(d): float(right[y_test == d].mean()) for d in range(10)},
    }
    return report, outcomes


def _print(report: dict, *, as_json: bool) -> None:
    version = report["version"]
    shown = ", ".join(f"{k} v{v}" for k, v in version.items()) if isinstance(version, dict) else f"v{version}"
    print(f"{report['model']} ({shown}): accuracy {report['accuracy']:.2%} on {report['n']} photos")
    unreadable = f", unreadable {report['unreadable']} (counted wrong)" if report.get("unreadable") else ""
    print(f"  unsure {report['unsure']}, not recognised {report['not_recognized']}{unreadable}")
    print(f"  expected calibration error {report['ece']:.2%}")
    for label, accuracy in report["per_class"].items():
        print(f"  {label:>12}  {accuracy:.2%}")
    for label, count in report.get("left_out", {}).items():
        photos = "photo" if count == 1 else "photos"
        print(f"  left out: {label}/ ({count} {photos}): not a label {report['model']} knows")
    if as_json:
        print(json.dumps(report, sort_keys=True))
