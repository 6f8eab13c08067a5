"""The `photobot` command line: one console script, a subcommand per job (`rasa train` / `rasa run` style).

Each subcommand is a module of `photobot.commands` (the composition layer, which may import every
package) with two functions:
`configure(parser)` adds its arguments, `main(args, settings) -> int` does the work. Those modules
import only the standard library at the top, so `photobot --help` stays fast; TensorFlow, Keras and
python-telegram-bot are imported inside `main` when a command needs them.

Quiet by default: the command's own output and what goes wrong, nothing else. TensorFlow's C++ logs
(TF_CPP_MIN_LOG_LEVEL=3) and its Python loggers are silenced before anything imports it, and our own
loggers show warnings and errors only, except in the long-running `run` and `playground` and in a
retrain job the bot started, which keep LOG_LEVEL. `--verbose` (before or after the command) keeps
every log; `--quiet` also hides the progress bars that long commands draw on stderr (they are hidden
anyway when stderr is not a terminal). LOG_FORMAT=json writes the logs as JSON lines (`photobot.logs`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from photobot.errors import UserFacingError
from photobot.logs import configure_logging
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
    "worker": ("photobot.commands.worker", "run the retraining jobs that /retrain queues (on a GPU node)"),
    "models": (
        "photobot.commands.models",
        "list, promote and roll back model versions; new models and labels taught from photos",
    ),
    "export": ("photobot.commands.export", "write the labelled data set as one folder per label"),
    "db": ("photobot.commands.db", "the database: copy an SQLite install into PostgreSQL (db migrate)"),
    "serve": ("photobot.commands.serve", "serve the models on Ray Serve for bots with INFERENCE_URL"),
    "bench": ("photobot.commands.bench", "benchmarks"),
}


# Commands that run until stopped: their INFO logs are how an operator follows them.
LONG_RUNNING = frozenset({"run", "playground", "serve", "worker"})
# Python loggers of TensorFlow and its absl logging: "Assets written to …", retracing warnings.
TENSORFLOW_LOGGERS = ("tensorflow", "absl", "h5py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photobot", description="PhotoBot: digits and flowers, on Telegram."
    )
    _add_global_flags(parser, False)
    # The same flags after the command (`photobot classify --verbose x.jpg`); SUPPRESS keeps a value
    # given before the command when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_flags(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        module = _command_module(module_name)
        if module is None:
            command.set_defaults(module=None)
            continue
        module.configure(command)
        command.set_defaults(module=module)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="show every log line, TensorFlow's included (default: warnings and errors only; "
        f"{', '.join(sorted(LONG_RUNNING))} log at LOG_LEVEL)",
    )
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bars on stderr")


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ logs (read when it loads, so before any import of it) and, once it is
    imported, its Python loggers. The decode processes inherit the environment.

    A few lines are written while TensorFlow's libraries load, before its logging reads that variable
    ("oneDNN custom operations are on", "Could not find cuda drivers"): the first import of
    `tensorflow`, wherever it happens, runs with those lines filtered out of stderr.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in TENSORFLOW_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, as the other finders would, and loads it with its log lines filtered."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and so that the lookup below finds the real module
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        from inference.lite import TF_LOAD_LINE, filtered_stderr

        module.__loader__ = module.__spec__.loader = self.loader  # the module sees its own loader
        with filtered_stderr(TF_LOAD_LINE.match):
            self.loader.exec_module(module)


def log_level(args: argparse.Namespace, settings_level: str) -> int | str:
    """LOG_LEVEL for `--verbose`, the long-running commands and a retrain job the bot started (its log
    file is the operator's record of it); warnings and errors for the rest."""
    started_by_bot = args.command == "retrain" and getattr(args, "job_id", None) is not None
    if args.verbose or args.command in LONG_RUNNING or started_by_bot:
        return settings_level
    configured = logging.getLevelName(settings_level)
    return max(configured, logging.WARNING) if isinstance(configured, int) else logging.WARNING


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
    if not args.verbose:
        quiet_tensorflow()
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"photobot: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(log_level(args, settings.log_level), settings.log_format)
    # Keras reads its backend from the environment when it is first imported (later, lazily): a value
    # from .env must be there by then.
    os.environ.setdefault("KERAS_BACKEND", settings.keras_backend)
    if args.module is None:
        print(f"photobot {args.command}: not available yet in this version.", file=sys.stderr)
        return 2
    try:
        return int(args.module.main(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        # A path that cannot be created, read or written (a missing folder, a file where a folder
        # should be, no permission) is the operator's to fix: one line naming the path, as for the
        # errors below. Anything else that is not user-facing keeps its traceback: a bug stays visible.
        print(f"photobot {args.command}: {os_error_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if not isinstance(error, _user_facing_errors()):
            raise
        print(f"photobot {args.command}: {error}", file=sys.stderr)
        return 1


def os_error_line(error: OSError) -> str:
    """`<path>: <strerror>` (`<path> -> <other path>` for a rename or a link); without a path or a
    strerror (an OSError raised with a message of its own), its message."""
    if error.filename is None or not error.strerror:
        return str(error)
    where = _path_text(error.filename)
    if error.filename2 is not None:
        where = f"{where} -> {_path_text(error.filename2)}"
    return f"{where}: {error.strerror}"


def _path_text(name: object) -> str:
    # An OSError's filename is what the call was given: text, bytes, or a file descriptor.
    return os.fsdecode(name) if isinstance(name, str | bytes) else str(name)


# Errors of the inner packages whose message already says what to do (set PHOTOBOT_DATASETS, train a
# model, upgrade PhotoBot, check DATABASE_URL): any command that meets one prints it as one line, without a
# traceback.
_ENVIRONMENT_ERRORS = {
    "training.datasets": ("DatasetUnavailable",),
    "training.flower_data": ("DatasetError",),
    "inference.errors": ("ModelUnavailable",),
    "storage.errors": ("SchemaTooNew", "DatabaseUnavailable"),
}


def _user_facing_errors() -> tuple[type[BaseException], ...]:
    # Looked up in sys.modules: an error of a module that was never imported cannot have been raised,
    # and the command line stays free of heavy imports.
    inner = tuple(
        getattr(sys.modules[module], name)
        for module, names in _ENVIRONMENT_ERRORS.items()
        if module in sys.modules
        for name in names
    )
    return (UserFacingError, *inner)
