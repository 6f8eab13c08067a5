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

Shared by several machines (`ModelStore(root, registry=…)`, when DATABASE_URL names PostgreSQL): the
versions, their files and the serving pointer live in a `VersionRegistry` (`storage.model_registry`), and
`root` becomes this machine's cache of the versions it has used, in the same layout. `new_version`
publishes to the registry (which numbers it: unique when several publish at once), `promote`/`rollback`
set the registry's pointer, `active_version` reads it (the Classifier polls it), and `get`/`active`/
`latest` fetch a version's files into the cache on first use: into a hidden folder, every file checked
against the SHA-256 the registry holds for it (a corrupted blob is refused, never served), then renamed
into place. `versions` lists metas only, fetching nothing. The cache needs no pointer of its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from inference.errors import ModelUnavailable

ANY = object()  # `promote`'s `expected` when any version may be serving


class ActiveVersionChanged(ModelUnavailable):
    """Another process switched the model's serving version since the caller looked."""

    def __init__(self, name: str, current: int | None) -> None:
        super().__init__(f"{name}: v{current} serves now, not the version the change was asked from")
        self.name, self.current = name, current


class NoSuchVersion(ModelUnavailable):
    """The model has no version of that number."""

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"{name} has no version {version}")
        self.name, self.version = name, version


class NoEarlierVersion(ModelUnavailable):
    """A rollback without a version number finds no version that served before the active one."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} has no earlier version to roll back to")
        self.name = name


log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
META_FILE = "meta.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")
FILES_RECORD = ".files.json"  # in a cached version: the registry's {file: SHA-256} it was fetched as
_SAFE_NAME = re.compile(r"^\w[\w.-]{0,99}$")  # a model name that is one plain folder name


class VersionRegistry(Protocol):
    """Where versions are registered when several machines share them (`storage.model_registry`).

    Primitive types only: a meta is a JSON object, a version's files are relative POSIX paths.
    """

    def names(self) -> list[str]:
        """Every model name with at least one version."""
        ...

    def versions(self, name: str) -> list[dict[str, Any]]:
        """The meta of every version of `name`, oldest first; each holds its "version"."""
        ...

    def meta(self, name: str, version: int) -> dict[str, Any] | None:
        """One version's meta, or None when there is no such version."""
        ...

    def files(self, name: str, version: int) -> dict[str, str]:
        """One version's files: relative path → SHA-256 of its content."""
        ...

    def publish(self, name: str, meta: dict[str, Any], files: Mapping[str, Path]) -> int:
        """Register a new version with these files (relative path → local file) and return its number:
        the next one for `name`, distinct for each of several publishers at once. The meta is stored
        with "name" and "version" set. All or nothing."""
        ...

    def update_meta(self, name: str, version: int, fields: dict[str, Any]) -> dict[str, Any]:
        """Merge `fields` into a version's meta; return the new meta."""
        ...

    def active(self, name: str) -> int | None:
        """The serving version of `name`, or None."""
        ...

    def set_active(self, name: str, version: int) -> None:
        """Make `version` (registered) the serving one, for every process that polls `active`."""
        ...

    def fetch(self, name: str, version: int, folder: Path) -> None:
        """Write the version's files under `folder`, as stored (the store checks their SHA-256)."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """Held by one process at a time for `name`, across machines (seeding a fresh deployment)."""
        ...

    def close(self) -> None: ...


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
    def __init__(self, root: Path, registry: VersionRegistry | None = None) -> None:
        self.root = Path(root)
        self.registry = registry  # None: the folders under `root` are the store itself

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """Held by one process at a time (shared store): one of several starting processes seeds."""
        return nullcontext() if self.registry is None else self.registry.exclusive(name)

    def names(self) -> list[str]:
        if self.registry is not None:
            return self.registry.names()
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version, oldest first (shared store: metas only; `get` fetches a version's files)."""
        if self.registry is not None:
            return [
                ModelVersion(name, int(meta["version"]), self._cache(name, int(meta["version"])), meta)
                for meta in self.registry.versions(name)
            ]
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
        if self.registry is not None:
            meta = self.registry.meta(name, version)
            if meta is None:
                raise NoSuchVersion(name, version)
            return self._materialise(name, version, meta)
        if not (self.root / name / f"v{version}" / META_FILE).is_file():
            raise NoSuchVersion(name, version)
        return self._read(name, version)

    def active_version(self, name: str) -> int | None:
        if self.registry is not None:
            return self.registry.active(name)
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
            publish = self._publish if self.registry is None else self._publish_shared
            staged.version = publish(name, staging, meta)
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

    def _publish_shared(self, name: str, staging: Path, meta: dict[str, Any]) -> int:
        """Register the staged files in the registry, then keep them as this machine's cached copy."""
        assert self.registry is not None
        files = _files_in(staging)
        full_meta = {**meta, "name": name, "sha256": _hashes(staging)}
        full_meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        full_meta.pop("version", None)
        version = self.registry.publish(name, full_meta, files)
        record = {path: sha256_file(file) for path, file in files.items()}
        _write_json(staging / META_FILE, {**full_meta, "version": version})
        _write_json(staging / FILES_RECORD, record)
        _fsync_tree(staging)
        self._install(staging, self._cache(name, version), record, f"{name} v{version}")
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
        return self.get(name, versions[-1].version) if versions else None

    def promote(self, name: str, version: int, *, expected: int | object | None = ANY) -> ModelVersion:
        """Make `version` the serving one: write the pointer beside, fsync, rename over the old (shared
        store: fetch and check the version here first, then set the registry's pointer). Its meta says
        when it first served (`served_at`): a rollback goes back to a version that has served.

        With `expected` (the version an admin saw serving when they asked), only if that one still
        serves, checked and switched under a lock that every process promoting with `expected` takes
        (across machines on a shared store): ActiveVersionChanged otherwise."""
        if expected is ANY:
            return self._promote(name, version)
        with self._pointer_lock(name):
            current = self.active_version(name)
            if current != expected:
                raise ActiveVersionChanged(name, current)
            return self._promote(name, version)

    @contextmanager
    def _pointer_lock(self, name: str) -> Iterator[None]:
        if self.registry is not None:
            with self.registry.exclusive(name):
                yield
            return
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".promote.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _promote(self, name: str, version: int) -> ModelVersion:
        target = self.get(name, version)
        if "served_at" not in target.meta:
            target = self.update_meta(name, version, served_at=time.time())
        if self.registry is not None:
            self.registry.set_active(name, version)
            return target
        pointer = self.root / name / "active"
        temporary = pointer.with_name(f".active-{uuid.uuid4().hex}")
        with open(temporary, "w") as handle:
            handle.write(f"{version}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, pointer)
        _fsync_dir(pointer.parent)
        return target

    def rollback(
        self, name: str, version: int | None = None, *, expected: int | object | None = ANY
    ) -> ModelVersion:
        """Serve an earlier version: the one given, or `rollback_target`'s (`expected`: see `promote`)."""
        return self.promote(name, self.rollback_target(name, version), expected=expected)

    def rollback_target(self, name: str, version: int | None = None) -> int:
        """The version a rollback serves: the one given (it must exist), else the newest below the
        active one that has served before; in a store older than `served_at`, the newest not rejected.
        ModelUnavailable when there is none. A version trained with --no-promote, or kept unserved, is
        no way back: nobody has seen it answer."""
        if version is not None:
            return self.get(name, version).version
        current = self.active_version(name)
        earlier = [
            v
            for v in self.versions(name)
            if (current is None or v.version < current) and v.meta.get("status") != "rejected"
        ]
        served = [v for v in earlier if "served_at" in v.meta]
        if not (served or earlier):
            raise NoEarlierVersion(name)
        return (served or earlier)[-1].version

    def update_meta(self, name: str, version: int, **fields: Any) -> ModelVersion:
        """Merge fields into a version's meta.json (atomically replaced)."""
        if self.registry is not None:
            if self.registry.meta(name, version) is None:
                raise NoSuchVersion(name, version)
            meta = self.registry.update_meta(name, version, fields)
            cached = self._cache(name, version)
            if (cached / META_FILE).is_file() and not cached.is_symlink():
                _write_json(cached / META_FILE, meta)
            return ModelVersion(name=name, version=version, path=cached, meta=meta)
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

    # The shared store's cache.

    def _cache(self, name: str, version: int) -> Path:
        """Where this machine keeps a registered version: `<root>/<name>/v<N>`, as in a files-only store."""
        if not _SAFE_NAME.match(name):
            raise ModelUnavailable(f"{name!r} is not a model name that can be a folder")
        return self.root / name / f"v{version}"

    def _materialise(self, name: str, version: int, meta: dict[str, Any]) -> ModelVersion:
        """The version with its files in the cache: fetched once, each file checked against its SHA-256."""
        assert self.registry is not None
        label = f"{name} v{version}"
        folder = self._cache(name, version)
        expected = self.registry.files(name, version)
        if not self._cached(folder, expected, label) and not self._adopt(folder, expected, meta):
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = folder.parent / f".fetch-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                self.registry.fetch(name, version, staging)
                for path, digest in expected.items():
                    file = staging / _relative(path)
                    if file.is_symlink() or not file.is_file() or sha256_file(file) != digest:
                        raise ModelUnavailable(
                            f"{label}: {path} as fetched from the registry does not have the SHA-256 it "
                            "was published with; refusing it"
                        )
                _write_json(staging / META_FILE, meta)
                _write_json(staging / FILES_RECORD, expected)
                _fsync_tree(staging)
                self._install(staging, folder, expected, label)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return ModelVersion(name=name, version=version, path=folder, meta=meta)

    def _cached(self, folder: Path, expected: dict[str, str], label: str) -> bool:
        """Whether `folder` holds the version as the registry has it (a link is refused, not replaced)."""
        if not folder.exists() and not folder.is_symlink():
            return False
        check_inside(self.root, folder, label)
        try:
            record = json.loads((folder / FILES_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # a files-only store's folder, or a fetch cut short: fetched again
        return bool(record == expected and all((folder / _relative(p)).is_file() for p in expected))

    def _adopt(self, folder: Path, expected: dict[str, str], meta: dict[str, Any]) -> bool:
        """Take a files-only store's folder as the cached version when its files are exactly the
        registered ones (`photobot db migrate` copied them): no need to fetch them again."""
        if folder.is_symlink() or not folder.is_dir() or (folder / FILES_RECORD).exists():
            return False
        for path, digest in expected.items():
            file = folder / _relative(path)
            if file.is_symlink() or not file.is_file() or sha256_file(file) != digest:
                return False
        _write_json(folder / META_FILE, meta)
        _write_json(folder / FILES_RECORD, expected)
        return True

    def _install(self, staging: Path, folder: Path, expected: dict[str, str], label: str) -> None:
        """Rename a complete version into the cache. A folder in the way is moved aside: deleted when it
        is an old cached copy, kept (and logged) when it is a files-only store's version of that number,
        which may be someone's only copy of a model."""
        while True:
            try:
                os.rename(staging, folder)
                _fsync_dir(folder.parent)
                return
            except OSError:
                if not folder.exists() and not folder.is_symlink():
                    raise
                if self._cached(folder, expected, label):
                    return  # another process fetched it first
                cached = (folder / FILES_RECORD).exists()
                aside = folder.with_name(
                    f".{'stale' if cached else 'replaced'}-{folder.name}-{uuid.uuid4().hex}"
                )
                os.rename(folder, aside)
                if cached:
                    shutil.rmtree(aside, ignore_errors=True)
                else:
                    log.warning(
                        "%s: %s is not the registered version; it was kept as %s", label, folder, aside
                    )


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


def _files_in(folder: Path) -> dict[str, Path]:
    """The regular files of a staged version by relative POSIX path (links refused, hidden ones left)."""
    files = {}
    for item in sorted(folder.rglob("*")):
        relative = item.relative_to(folder)
        if item.is_symlink():
            raise ModelUnavailable(f"{relative} in a new version is a link; publish real files only")
        hidden = any(part.startswith(".") for part in relative.parts)
        if item.is_file() and not hidden and relative.as_posix() != META_FILE:
            files[relative.as_posix()] = item
    return files


def _relative(path: str) -> Path:
    """A registered file's path inside its version folder; anything that could leave it is refused."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part in ("", ".", "..") for part in pure.parts):
        raise ModelUnavailable(f"{path!r} is not a file name inside a version")
    return Path(*pure.parts)


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
