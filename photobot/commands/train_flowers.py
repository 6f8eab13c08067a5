"""`photobot train flowers`."""

from __future__ import annotations

import argparse

from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace, settings: Settings) -> int:
    raise UserFacingError("training flowers is not built yet in this version")
