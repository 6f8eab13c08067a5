"""The model store: one directory per version, and an `active` pointer switched atomically.

    <root>/<name>/v<N>/model.keras   the model (saved by this project only; loaded with safe_mode)
    <root>/<name>/v<N>/meta.json     labels, preprocessing id, metrics, data, parent, created, command
    <root>/<name>/active             the serving version number, replaced atomically

A version appears all at once: it is written into a hidden staging directory and renamed into place,
so a reader never sees a half-written version. Only directories with a `meta.json` count.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.errors import ModelUnavailable

MODEL_FILE = "model.keras"
META_FILE = "meta.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def labels(self) -> list[str]:
        return list(self.meta.get("labels", []))


@dataclass
class StagedVersion:
    """A version being written: files go under `path`; `version` is known once the block has ended."""

    path: Path
    version: int | None = None


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[ModelVersion]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            match = _VERSION_DIR.match(child.name)
            if match and (child / META_FILE).is_file():
                found.append(self._read(name, int(match.group(1))))
        return sorted(found, key=lambda v: v.version)

    def get(self, name: str, version: int) -> ModelVersion:
        if not (self.root / name / f"v{version}" / META_FILE).is_file():
            raise ModelUnavailable(f"{name} has no version {version}")
        return self._read(name, version)

    def active_version(self, name: str) -> int | None:
        pointer = self.root / name / "active"
        try:
            return int(pointer.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def active(self, name: str) -> ModelVersion | None:
        version = self.active_version(name)
        return None if version is None else self.get(name, version)

    @contextmanager
    def new_version(self, name: str, meta: dict[str, Any]) -> Iterator[StagedVersion]:
        """Yield a staging directory to write the model into; on success it becomes `v<N>`.

        `meta` is completed with `name`, `version` and `created` and written as `meta.json`. If the body
        raises, the staging directory is removed and no version appears. The new version is not made
        active: call `promote` for that.
        """
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        staged = StagedVersion(path=staging)
        try:
            yield staged
            staged.version = self._publish(name, staging, meta)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, name: str, staging: Path, meta: dict[str, Any]) -> int:
        while True:
            version = self._next_version_number(name)
            full_meta = {**meta, "name": name, "version": version}
            full_meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            _write_json(staging / META_FILE, full_meta)
            _fsync_tree(staging)
            try:
                os.rename(staging, self.root / name / f"v{version}")
            except OSError:
                if (self.root / name / f"v{version}").exists():
                    continue  # another writer took this number first
                raise
            _fsync_dir(self.root / name)
            return version

    def _next_version_number(self, name: str) -> int:
        numbers = [int(m.group(1)) for p in (self.root / name).iterdir() if (m := _VERSION_DIR.match(p.name))]
        return max(numbers, default=0) + 1

    def add_version(self, name: str, source: Path, meta: dict[str, Any]) -> ModelVersion:
        """Copy the files of a directory into a new version (used to seed shipped default models)."""
        with self.new_version(name, meta) as staged:
            for item in Path(source).iterdir():
                if item.name == META_FILE:
                    continue
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, staged.path / item.name)
        return self.get(name, staged.version)

    def latest(self, name: str) -> ModelVersion | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def promote(self, name: str, version: int) -> ModelVersion:
        """Make `version` the serving one: write the pointer beside, fsync, rename over the old."""
        target = self.get(name, version)
        pointer = self.root / name / "active"
        temporary = pointer.with_name(f".active-{uuid.uuid4().hex}")
        with open(temporary, "w") as handle:
            handle.write(f"{version}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, pointer)
        _fsync_dir(pointer.parent)
        return target

    def rollback(self, name: str, version: int | None = None) -> ModelVersion:
        """Serve an earlier version: the one given, or the newest non-rejected one below the active."""
        if version is None:
            current = self.active_version(name)
            earlier = [
                v
                for v in self.versions(name)
                if (current is None or v.version < current) and v.meta.get("status") != "rejected"
            ]
            if not earlier:
                raise ModelUnavailable(f"{name} has no earlier version to roll back to")
            version = earlier[-1].version
        return self.promote(name, version)

    def update_meta(self, name: str, version: int, **fields: Any) -> ModelVersion:
        """Merge fields into a version's meta.json (atomically replaced)."""
        current = self.get(name, version)
        _write_json(current.path / META_FILE, {**current.meta, **fields})
        return self.get(name, version)

    def _read(self, name: str, version: int) -> ModelVersion:
        path = self.root / name / f"v{version}"
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelUnavailable(f"{name} v{version}: unreadable {META_FILE}: {error}") from error
        return ModelVersion(name=name, version=version, path=path, meta=meta)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _fsync_tree(folder: Path) -> None:
    for item in folder.rglob("*"):
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
