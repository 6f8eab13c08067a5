"""`photobot evaluate --model digits|flowers|auto (--images DIR | --mnist-test) [--json]`.

`--images DIR`: accuracy on a folder of labelled photos, one sub-folder per label (`7/`, `2026/`,
`daisy/`; `none/` for photos that must be `not_recognized`). Photos go through the serving engine
exactly as in the bot. An answer counts as right when its label is the folder's name (also when it
is `unsure`, which the bot would ask about), or, in `none/`, when it is `not_recognized`.

`--mnist-test` (digits only): accuracy of the serving digit model on the 10,000 MNIST test digits,
framed as served crops are.

With --json the last line is one JSON object:
`{"model", "version", "n", "accuracy", "unsure", "not_recognized", "per_class": {label: accuracy}}`
(`unsure` and `not_recognized` are counts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inference.catalogue import DEFAULT_CATALOGUE, ModelKind
from photobot.errors import UserFacingError
from photobot.settings import Settings

NO_LABEL = "none"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=(*DEFAULT_CATALOGUE.names, "auto"),
        required=True,
        help="which model (auto: the router)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--images", type=Path, metavar="DIR", help="labelled photos, one sub-folder per label"
    )
    source.add_argument("--mnist-test", action="store_true", help="the MNIST test set (digits only)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.mnist_test:
        spec = DEFAULT_CATALOGUE.get(args.model)
        if spec is None or spec.kind != ModelKind.DIGIT_READER:
            readers = ", ".join(s.name for s in DEFAULT_CATALOGUE.of_kind(ModelKind.DIGIT_READER))
            raise UserFacingError(f"--mnist-test measures a digit reader: use --model {readers}")
        report = _mnist_test(settings, spec.name)
    else:
        if not args.images.is_dir():
            raise UserFacingError(f"{args.images}: not a folder (expected one sub-folder per label)")
        import asyncio

        report = asyncio.run(evaluate_folder(args.images, args.model, settings))
    _print(report, as_json=args.json)
    return 0


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


async def evaluate_folder(folder: Path, model: str, settings: Settings) -> dict:
    """Every labelled photo through the engine; the DESIGN.md report."""
    from photobot.commands.classify import classify_files

    photos = labelled_photos(folder)
    spec = DEFAULT_CATALOGUE.get(model)
    answers = await classify_files([p for p, _ in photos], spec.mode if spec else "auto", settings)
    tallies: dict[str, list[int]] = {}
    unsure = not_recognized = right_total = 0
    failed = []
    versions: dict[str, int] = {}
    for (path, truth), answer in zip(photos, answers, strict=True):
        tally = tallies.setdefault(truth, [0, 0])
        tally[1] += 1
        if isinstance(answer, Exception):
            failed.append(f"{path}: {answer}")
            continue
        if answer.model and answer.version is not None:
            versions[answer.model] = answer.version
        unsure += answer.status == "unsure"
        not_recognized += answer.status == "not_recognized"
        right = answer.status == "not_recognized" if truth == NO_LABEL else answer.label == truth
        tally[0] += right
        right_total += right
    for line in failed[:10]:
        print(f"unreadable: {line}", file=sys.stderr)
    n = len(photos)
    return {
        "model": model,
        "version": versions.get(model) if model != "auto" else versions,
        "n": n,
        "accuracy": right_total / n,
        "unsure": unsure,
        "not_recognized": not_recognized,
        "per_class": {label: right / total for label, (right, total) in sorted(tallies.items())},
    }


def _mnist_test(settings: Settings, name: str) -> dict:
    import numpy as np

    from inference.loading import load_version
    from inference.model_store import ModelStore
    from training.datasets import load_mnist
    from training.train_digits import mnist_inputs

    store = ModelStore(settings.models_dir)
    version = store.active(name)
    if version is None:
        raise UserFacingError(f"no active {name} model: run `photobot train {name}` or start the bot once")
    loaded = load_version(version, max_batch=2, padded_sizes=())
    _, _, x_test, y_test = load_mnist(settings.datasets, settings.data_dir)
    x = mnist_inputs(x_test, framed=True)
    predicted = np.concatenate(
        [np.argmax(loaded.run(x[i : i + 1000]), axis=1) for i in range(0, len(x), 1000)]
    )
    right = predicted == y_test
    return {
        "model": name,
        "version": version.version,
        "n": len(y_test),
        "accuracy": float(right.mean()),
        "unsure": 0,
        "not_recognized": 0,
        "per_class": {str(d): float(right[y_test == d].mean()) for d in range(10)},
    }


def _print(report: dict, *, as_json: bool) -> None:
    version = report["version"]
    shown = ", ".join(f"{k} v{v}" for k, v in version.items()) if isinstance(version, dict) else f"v{version}"
    print(f"{report['model']} ({shown}): accuracy {report['accuracy']:.2%} on {report['n']} photos")
    print(f"  unsure {report['unsure']}, not recognised {report['not_recognized']}")
    for label, accuracy in report["per_class"].items():
        print(f"  {label:>12}  {accuracy:.2%}")
    if as_json:
        print(json.dumps(report, sort_keys=True))
