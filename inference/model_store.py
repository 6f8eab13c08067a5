"""The model store: one directory per version, and an `active` pointer switched atomically.

    <root>/<name>/v<N>/model.keras   the model (saved by this project only; loaded with safe_mode)
    <root>/<name>/v<N>/meta.json     labels, preprocessing id, metrics, data, parent, created, command,
                                     and the SHA-256 of model.keras as published ("sha256")
    <root>/<name>/active             the serving version number, replaced atomically

A version appears all at once: it is written into a hidden staging directory and renamed into place,
so a reader never sees a half-written version. Only directories with a `meta.json` count, and only
real ones: a version directory that is a symlink, or resolves outside the store, is refused (a model
file is code-adjacent: whoever can point a version elsewhere chooses what the bot loads). The hash
recorded at publication lets loading refuse a model file changed since (`inference.loading`).
"""

from __future__ import annotations

import hashlib
import json
import logging
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

log = logging.getLogger(__name__)

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

    @property
    def published(self) -> int:
        """The version's number, for code after the `new_version` block (inside it there is none yet)."""
        if self.version is None:
            raise RuntimeError(f"{self.path} is not published yet: read the version after the block")
        return self.version


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
            if not match or not (child / META_FILE).is_file():
                continue
            try:
                check_inside(self.root, child, f"{name} {child.name}")
            except ModelUnavailable as error:
                log.warning("ignoring a version: %s", error)
                continue
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
            full_meta = {**meta, "name": name, "version": version, "sha256": _hashes(staging)}
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
        return self.get(name, staged.published)

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
        check_inside(self.root, path, f"{name} v{version}")
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ModelUnavailable(f"{name} v{version}: unreadable {META_FILE}: {error}") from error
        return ModelVersion(name=name, version=version, path=path, meta=meta)


def check_inside(root: Path, path: Path, label: str) -> None:
    """Refuse a version directory that is a symlink or resolves to anywhere but `root/<name>/v<N>`."""
    expected = Path(root).resolve() / path.parent.name / path.name
    if path.is_symlink() or path.resolve() != expected:
        raise ModelUnavailable(f"{label}: {path} is a link or lies outside the model store {root}")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (the flower model is ~20 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hashes(staging: Path) -> dict[str, str]:
    """SHA-256 of the model file being published, by file name, for meta.json."""
    model = staging / MODEL_FILE
    return {MODEL_FILE: sha256_file(model)} if model.is_file() else {}


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
