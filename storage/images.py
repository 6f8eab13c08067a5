"""Photos on disk, content-addressed: `<root>/<first two hex digits>/<sha256>`.

This is each machine's cache of the photos whose bytes the database holds (`storage.photo_bytes`): the
store writes a photo's file as it stores it, and writes a missing one from the database when asked.

A file appears only complete: bytes go to a temporary file under `<root>/.tmp/`, are flushed and
fsynced, and the file is renamed into place (then the directory is fsynced), so a crash leaves either
the whole image or nothing at its name. The same bytes are stored once.

Temporary files of a process that died are removed at the next start. Writers hold a shared lock on
`.tmp/.lock` while they may have temporary files; the clean-up runs only when it can take that lock
exclusively, so it never deletes a file another live process is still writing.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
TMP_SUFFIX = ".part"

# Magic numbers of the formats the bot accepts, for file extensions on export.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)
EXTENSIONS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "webp": ".webp"}


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: str  # relative to the store's root
    size: int
    created: bool  # False when the same bytes were already stored


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sniff_format(head: bytes) -> str | None:
    """The image format from the file's first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


class ImageStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None

    def open(self) -> ImageStore:
        """Create the folders, remove temporary files left by dead processes, then hold the writer lock."""
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / TMP_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.debug("%s: another process is writing images; leftover temporary files wait", self.root)
        else:
            self._remove_leftovers()
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._lock_fd = fd
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def __enter__(self) -> ImageStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def relative_path(sha256: str) -> str:
        """Where the photo with this hash lives; refuses anything but a hash (no path from outside)."""
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a SHA-256 in lowercase hex: {sha256[:80]!r}")
        return f"{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> Path:
        return self.root / self.relative_path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def put(self, data: bytes) -> StoredImage:
        """Store `data` durably under its SHA-256 (blocking: call it from a worker thread)."""
        if self._lock_fd is None:
            raise RuntimeError("ImageStore.open() must be called before put()")
        digest = sha256_hex(data)
        final = self.path(digest)
        if final.is_file():
            return StoredImage(digest, self.relative_path(digest), len(data), created=False)
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        temp = self.root / TMP_DIR / f"{uuid.uuid4().hex}{TMP_SUFFIX}"
        try:
            with open(temp, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        return StoredImage(digest, self.relative_path(digest), len(data), created=True)

    def delete(self, sha256: str) -> bool:
        """Remove a stored image; True if a file was removed."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.path(sha256).parent)
        return True

    def older_than(self, seconds: float) -> list[str]:
        """Hashes of the stored images last written more than `seconds` ago."""
        cutoff = time.time() - seconds
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if len(entry.name) == 64 and entry.is_file() and entry.stat().st_mtime < cutoff:
                    found.append(entry.name)
        return found

    def leftover_temp_files(self) -> list[Path]:
        folder = self.root / TMP_DIR
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))

    def _remove_leftovers(self) -> None:
        leftovers = self.leftover_temp_files()
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            log.info("%s: removed %d temporary files left by a crash", self.root, len(leftovers))


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(value: object) -> bool:
    """Exactly 64 lowercase hex digits: the only thing an image's file name may be built from."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None
