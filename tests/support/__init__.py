"""Plain helpers the tests import (`from tests.support.bot import start_bot`); fixtures live in conftest."""

from pathlib import Path

# The checkout's root: the shipped models, `.env.example` and the packages' own files are read from here.
REPO = Path(__file__).resolve().parents[2]
