"""`photobot train digits|flowers …`: train a model from the datasets into the model store.

Each model's options and work live in their own module (`train_digits`, `train_flowers`). The new
version serves when no version does or its test accuracy is at least the serving version's, on the same
test set (`serve_if_better`); else it is kept, unserved, and the last line says so with both figures.
`--force` serves it regardless, `--no-promote` never.
"""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

from photobot.settings import Settings

if TYPE_CHECKING:  # the command line imports no more than the standard library at the top
    from inference.model_store import ModelStore, ModelVersion

MODELS = {
    "digits": ("photobot.commands.train_digits", "the digit reader (MNIST): the course's MLP or the CNN"),
    "flowers": ("photobot.commands.train_flowers", "the flower classifier on a pretrained backbone"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name, (module_name, help_text) in MODELS.items():
        module = importlib.import_module(module_name)
        module.configure(sub.add_parser(name, help=help_text, description=help_text))


def main(args: argparse.Namespace, settings: Settings) -> int:
    module = importlib.import_module(MODELS[args.model][0])
    return module.main(args, settings)


def add_promotion_flags(parser: argparse.ArgumentParser) -> None:
    """--no-promote and --force, for every model: by default the new version serves only if it is no
    worse than the serving one (README)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-promote", action="store_true", help="store the new version without making it the serving one"
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="serve the new version even if its test accuracy is below the serving version's "
        "(default: it serves only if it is at least as good)",
    )


def serve_if_better(store: ModelStore, name: str, version: ModelVersion, args: argparse.Namespace) -> str:
    """Serve the version just trained when no version serves or it is at least as good on the same test
    set (`training.gate.judge_trained`), or with --force; else keep it stored, marked rejected (so no
    rollback lands on it), as the gate does. Returns what became of it, in words for the command's
    last line."""
    from training.gate import judge_trained

    if args.no_promote:
        return "not promoted"
    serving = store.active(name)
    if serving is None:
        store.promote(name, version.version)
        return "now serving"
    decision = judge_trained(name, serving, version)
    if args.force:
        store.promote(name, version.version)
        return f"now serving, forced: {decision.reason}"
    status = "promoted" if decision.promote else "rejected"
    store.update_meta(name, version.version, status=status, gate=decision.as_meta())
    if decision.promote:
        store.promote(name, version.version)
        return f"now serving: {decision.reason}"
    return (
        f"not serving: {decision.reason}; "
        f"to serve it anyway: photobot models promote {name} {version.version}"
    )
