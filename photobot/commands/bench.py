"""`photobot bench TARGET …`: the benchmarks, one module per target (like `photobot train MODEL`).

Each target module has `configure(parser)` and `main(args, settings) -> int`; add a line to TARGETS.
"""

from __future__ import annotations

import argparse
import importlib

from photobot.settings import Settings

TARGETS: dict[str, tuple[str, str]] = {
    "inference": (
        "photobot.commands.bench_inference",
        "the batching engine against per-request predict/call, and a hot swap under load",
    ),
    "storage": (
        "photobot.commands.bench_storage",
        "durable writes/s from concurrent tasks, and crash safety under SIGKILL",
    ),
    "bot": (
        "photobot.commands.bench_bot",
        "the bot end to end through a local Bot API server, closed loop, against a bare bot",
    ),
    "flowers": (
        "photobot.commands.bench_flowers",
        "flower feature extraction photos/s (batch 32) and single-photo latency",
    ),
    "playground": (
        "photobot.commands.bench_playground",
        "seconds from starting the playground on a fresh checkout to an answered photo",
    ),
    "promote": (
        "photobot.commands.bench_promote",
        "from `photobot models promote` to every serving process on the new version (PostgreSQL)",
    ),
    "retrain": (
        "photobot.commands.bench_retrain",
        "retraining on a handwriting the model misreads, a poisoned batch, and both jobs' wall time",
    ),
    "scale": (
        "photobot.commands.bench_scale",
        "bot replicas behind nginx, Ray Serve and PostgreSQL on this machine, one of each killed mid-run",
    ),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module_name, help_text) in TARGETS.items():
        module = importlib.import_module(module_name)
        module.configure(sub.add_parser(name, help=help_text, description=help_text))


def main(args: argparse.Namespace, settings: Settings) -> int:
    module = importlib.import_module(TARGETS[args.target][0])
    return module.main(args, settings)
