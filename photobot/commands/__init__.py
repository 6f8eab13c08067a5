"""`photobot` subcommands: each module has `configure(parser)` and `main(args, settings) -> int`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (`--top 0` or `--epochs -2` make no sense)."""
    return _whole_number(text, 1, "a positive whole number", "a positive whole number (1 or more)")


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _whole_number(text, 0, "a whole number", "a whole number of 0 or more")


def _whole_number(text: str, least: int, expected: str, expected_at_least: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {expected_at_least}, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a share in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a share from 0 up to (not including) 1, got {value:g}")
    return value


def progress_bar(total: int | None, description: str, *, quiet: bool, unit: str = "photo") -> tqdm[Any]:
    """A tqdm bar on stderr for a long command: hidden with --quiet and when stderr is not a terminal
    (a log file, a pipe, the tests), so the output people parse never holds one."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=True if quiet else None,  # None: tqdm shows it only on a terminal
        leave=False,
        dynamic_ncols=True,
    )
