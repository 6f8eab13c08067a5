"""`photobot train digits|flowers …`: train a model from the datasets into the model store.

Each model's options and work live in their own module (`train_digits`, `train_flowers`).
"""

from __future__ import annotations

import argparse
import importlib

from photobot.settings import Settings

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
