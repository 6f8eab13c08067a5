"""Test inputs that cost seconds of CPU to make and are the same every time: made once per test run.

A trained model, a seeded model store with its LiteRT conversions: `built_once` makes one in a folder of
this run the first time a test asks, and every later request (in this process or in another pytest-xdist
worker of the same run) reuses it. Tests copy what they change, never the shared folder itself.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test run: its xdist workers' base folders sit side by side in it (`popen-gwN`),
    so it is theirs to share; without xdist, the session's own base folder. Never one of an earlier run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing): one process at a time inside."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name` of this run, made by `build(folder)` in the first process that asks for it.

    The others wait on its lock meanwhile. It is built under another name and renamed into place when
    `build` returns, so a build that fails leaves nothing that looks finished (the next asker tries again).
    """
    root = run_folder(tmp_path_factory) / "built-once"
    root.mkdir(exist_ok=True)
    target = root / name
    with locked(root / f"{name}.lock"):
        if not target.is_dir():
            partial = root / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(target)
    return target
