"""The `photobot` command line: one console script, a subcommand per job (`rasa train` / `rasa run` style).

Each subcommand is a module of `photobot.commands` (the composition layer, which may import every
package) with two functions:
`configure(parser)` adds its arguments, `main(args, settings) -> int` does the work. Those modules
import only the standard library at the top, so `photobot --help` stays fast; TensorFlow, Keras and
python-telegram-bot are imported inside `main` when a command needs them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from photobot.errors import UserFacingError
from photobot.settings import Settings, SettingsError

# name → (module, one-line help). Order is the order of `photobot --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("photobot.commands.run", "start the bot"),
    "playground": (
        "photobot.commands.playground",
        "try the bot in a browser, offline, with no Telegram account",
    ),
    "train": ("photobot.commands.train", "train a model from the datasets into the model store"),
    "evaluate": (
        "photobot.commands.evaluate",
        "accuracy on a folder of labelled photos or the MNIST test set",
    ),
    "classify": ("photobot.commands.classify", "answers for photos, with percentages"),
    "experiment": ("photobot.commands.experiment", "compare architectures over repeated random splits"),
    "retrain": ("photobot.commands.retrain", "learn from the photos people labelled in chat"),
    "models": ("photobot.commands.models", "list, promote and roll back model versions"),
    "export": ("photobot.commands.export", "write the labelled data set as one folder per label"),
    "bench": ("photobot.commands.bench", "benchmarks"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photobot", description="PhotoBot: digits and flowers, on Telegram."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = _command_module(module_name)
        if module is None:
            command.set_defaults(module=None)
            continue
        module.configure(command)
        command.set_defaults(module=module)
    return parser


def _command_module(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return None  # that command is not built yet
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"photobot: configuration error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.module is None:
        print(f"photobot {args.command}: not available yet in this version.", file=sys.stderr)
        return 2
    try:
        return int(args.module.main(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if not isinstance(error, _user_facing_errors()):
            raise
        print(f"photobot {args.command}: {error}", file=sys.stderr)
        return 1


# Errors of the inner packages whose message already says what to do (set PHOTOBOT_DATASETS, train a
# model, upgrade PhotoBot): any command that meets one prints it as one line, without a traceback.
_ENVIRONMENT_ERRORS = {
    "training.datasets": "DatasetUnavailable",
    "training.flower_data": "DatasetError",
    "inference.errors": "ModelUnavailable",
    "storage.errors": "SchemaTooNew",
}


def _user_facing_errors() -> tuple[type[BaseException], ...]:
    # Looked up in sys.modules: an error of a module that was never imported cannot have been raised,
    # and the command line stays free of heavy imports.
    inner = tuple(
        getattr(sys.modules[module], name)
        for module, name in _ENVIRONMENT_ERRORS.items()
        if module in sys.modules
    )
    return (UserFacingError, *inner)
