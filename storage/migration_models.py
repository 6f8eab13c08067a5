"""Model versions and serving pointers for `storage.migration`: an install's model store (folders
`<name>/v<N>/` on SQLite installs) copied into the database's model registry (`storage.model_registry`'s
tables), each version keeping its number, which predictions and model events refer to.

The caller reads the folders (it knows their layout: `inference.model_store`) and hands over
`LocalModels`; here they are looked up, copied and verified like the tables' rows: a version already in
the target with the same files is left alone, one with other files refuses the run before anything is
written, and so does a serving pointer that names another version. Each version commits whole (its
blobs, its row and its files' rows), so a killed run leaves whole versions behind.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.dialect import Connection


@dataclass(frozen=True)
class LocalModelVersion:
    name: str
    version: int
    meta: dict[str, Any]  # its meta.json
    files: Mapping[str, Path]  # relative POSIX path inside the version → the file (meta.json not included)


@dataclass(frozen=True)
class LocalModels:
    versions: Sequence[LocalModelVersion]
    serving: Mapping[str, int]  # model → the version it serves


@dataclass
class ModelsResult:
    versions: int = 0
    versions_copied: int = 0
    versions_already: int = 0
    pointers: int = 0
    pointers_copied: int = 0
    pointers_already: int = 0
    files_checked: int = 0
    conflicts: list[str] = field(default_factory=list)
    _hashes: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict, repr=False)

    def lines(self) -> list[str]:
        return [
            f"model versions: {self.versions_copied} copied, {self.versions_already} already there",
            f"serving pointers: {self.pointers_copied} copied, {self.pointers_already} already there",
        ]


def look(dst: Connection, models: LocalModels) -> ModelsResult:
    """What the target already has; conflicts are listed, nothing is written."""
    result = ModelsResult(versions=len(models.versions), pointers=len(models.serving))
    for version in models.versions:
        local = {path: _sha256_file(file) for path, file in sorted(version.files.items())}
        result._hashes[version.name, version.version] = local
        there = _target_files(dst, version.name, version.version)
        if there is None:
            continue
        if there == local:
            result.versions_already += 1
        else:
            result.conflicts.append(f"{version.name} v{version.version} has other files in the target")
    known = {(v.name, v.version) for v in models.versions}
    for name, serving in sorted(models.serving.items()):
        if (name, serving) not in known:
            result.conflicts.append(f"{name} serves v{serving}, which is not in the model store")
            continue
        pointer = _target_pointer(dst, name)
        if pointer == serving:
            result.pointers_already += 1
        elif pointer is not None:
            result.conflicts.append(f"{name} serves v{pointer} in the target, v{serving} here")
    return result


def copy(dst: Connection, models: LocalModels, result: ModelsResult) -> None:
    """Copy the versions the target lacks (one transaction each), then the missing pointers."""
    now = time.time()
    for version in models.versions:
        if _target_files(dst, version.name, version.version) is not None:
            continue
        hashes = result._hashes[version.name, version.version]
        meta = json.dumps({**version.meta, "name": version.name, "version": version.version}, sort_keys=True)
        dst.execute("BEGIN IMMEDIATE")
        try:
            for path, file in sorted(version.files.items()):
                data = file.read_bytes()
                if hashlib.sha256(data).hexdigest() != hashes[path]:
                    raise ValueError(f"{file} changed while it was being copied")
                dst.execute(
                    """INSERT INTO model_blobs (sha256, size, data, created) VALUES (?, ?, ?, ?)
                       ON CONFLICT (sha256) DO NOTHING""",
                    (hashes[path], len(data), data, now),
                )
            dst.execute(
                "INSERT INTO model_versions (name, version, meta, created) VALUES (?, ?, ?, ?)",
                (version.name, version.version, meta, now),
            )
            for path in sorted(version.files):
                dst.execute(
                    "INSERT INTO model_files (name, version, path, sha256) VALUES (?, ?, ?, ?)",
                    (version.name, version.version, path, hashes[path]),
                )
            dst.execute("COMMIT")
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        result.versions_copied += 1
    for name, serving in sorted(models.serving.items()):
        copied = dst.execute(
            """INSERT INTO model_serving (name, version, changed) VALUES (?, ?, ?)
               ON CONFLICT (name) DO NOTHING""",
            (name, serving, now),
        ).rowcount
        result.pointers_copied += copied


def verify(dst: Connection, models: LocalModels, result: ModelsResult) -> list[str]:
    """What is wrong in the target, if anything: every version with the same files, every file's blob
    hashing to its name, every pointer on the same version."""
    wrong = []
    for version in models.versions:
        local = result._hashes[version.name, version.version]
        if _target_files(dst, version.name, version.version) != local:
            wrong.append(f"{version.name} v{version.version}: files differ")
            continue
        for path, sha256 in local.items():
            row = dst.execute("SELECT data FROM model_blobs WHERE sha256 = ?", (sha256,)).fetchone()
            if row is None or hashlib.sha256(bytes(row[0])).hexdigest() != sha256:
                wrong.append(
                    f"{version.name} v{version.version} {path}: its bytes do not hash to {sha256[:12]}…"
                )
            result.files_checked += 1
    for name, serving in models.serving.items():
        if _target_pointer(dst, name) != serving:
            wrong.append(f"{name}: the target does not serve v{serving}")
    return wrong


def _target_files(dst: Connection, name: str, version: int) -> dict[str, str] | None:
    """The target's files of a version, or None when it has no such version."""
    if (
        dst.execute("SELECT 1 FROM model_versions WHERE name = ? AND version = ?", (name, version)).fetchone()
        is None
    ):
        return None
    rows = dst.execute("SELECT path, sha256 FROM model_files WHERE name = ? AND version = ?", (name, version))
    return {str(path): str(sha256) for path, sha256 in rows}


def _target_pointer(dst: Connection, name: str) -> int | None:
    row = dst.execute("SELECT version FROM model_serving WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
