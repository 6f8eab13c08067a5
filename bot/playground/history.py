"""The playground's chats on disk, so `photobot playground` shows the earlier conversation after a restart.

In Telegram a chat's history lives on Telegram's servers, not in the bot; in the playground the local
Bot API server is Telegram, so it keeps it: each message as it stands now (after the bot's edits and
deletions) in a small SQLite file, `DATA_DIR/playground/history.sqlite3`, and each file once, named by
the SHA-256 of its bytes, under `DATA_DIR/playground/files/`. These are exactly what the people saw;
the bot's own database (photos, predictions, feedback) is not read, and knows nothing of this.

Writes are queued to one worker thread in the order the chats logged them (so an edit never lands
before the message it edits) and never block the event loop; `close` waits for them.

/forget: the playground drops its copy of a chat when the bot confirms that it forgot the person
(`Playground` watches for it), with the files no remaining message shows.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.playground.bot_api.files import StoredFile
from bot.playground.bot_api.protocol import Json

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    chat_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    message TEXT NOT NULL,  -- the Bot API Message object as the chat shows it now
    PRIMARY KEY (chat_id, message_id)
);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY,
    file_unique_id TEXT NOT NULL,
    file_path TEXT NOT NULL,
    sha256 TEXT NOT NULL  -- the name of its bytes under files/
);
CREATE TABLE IF NOT EXISTS message_files (
    chat_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    file_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, message_id, file_id)
);
CREATE TABLE IF NOT EXISTS languages (
    user_id INTEGER PRIMARY KEY,
    language TEXT NOT NULL  -- the Telegram language the page set for this person
);
"""


@dataclass(frozen=True)
class SavedChats:
    """What a restart finds: each chat's messages in order, the files they show, each person's language."""

    messages: dict[int, list[Json]]
    files: list[StoredFile]
    languages: dict[int, str]


class ChatHistory:
    """The chats under one folder; every change goes through one writer thread, in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files_dir = folder / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="playground-history")
        self._db = sqlite3.connect(folder / "history.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)

    # ------------------------------------------------------------------ reading, once at start

    def load(self) -> SavedChats:
        """Every saved chat and the files its messages show; a file whose bytes are gone is left out."""
        messages: dict[int, list[Json]] = {}
        rows = self._db.execute("SELECT chat_id, message FROM messages ORDER BY chat_id, message_id")
        for chat_id, raw in rows:
            messages.setdefault(chat_id, []).append(json.loads(raw))
        files = []
        for file_id, unique_id, path, digest in self._db.execute("SELECT * FROM files"):
            stored = self.files_dir / digest
            if not stored.is_file():
                logger.warning("playground history: the bytes of file %s are missing", file_id)
                continue
            files.append(StoredFile(file_id, unique_id, path, stored.read_bytes()))
        languages = dict(self._db.execute("SELECT user_id, language FROM languages"))
        return SavedChats(messages, files, languages)

    # ------------------------------------------------------------------ writing, in log order

    def save(self, chat_id: int, message: Json, files: Iterable[StoredFile]) -> None:
        """Queue a message as it stands now (new or edited), with the files it shows."""
        self._submit(self._save, chat_id, message, list(files))

    def delete(self, chat_id: int, message_id: int) -> None:
        self._submit(self._clear, chat_id, "message_id = ?", (message_id,))

    def clear(self, chat_id: int, keep: Iterable[int]) -> None:
        """Queue the removal of a chat's messages, all but `keep`."""
        kept = json.dumps(sorted(set(keep)))
        self._submit(self._clear, chat_id, "message_id NOT IN (SELECT value FROM json_each(?))", (kept,))

    def set_language(self, user_id: int, language: str) -> None:
        self._submit(self._set_language, user_id, language)

    def close(self) -> None:
        """Finish the queued writes, then close the file."""
        self._writer.shutdown(wait=True)
        self._db.close()

    def _submit(self, work, *args) -> None:
        future = self._writer.submit(work, *args)
        future.add_done_callback(_log_failure)

    def _save(self, chat_id: int, message: Json, files: list[StoredFile]) -> None:
        for stored in files:
            self._keep_bytes(stored)
        message_id = message["message_id"]
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO messages VALUES (?, ?, ?)",
                (chat_id, message_id, json.dumps(message, ensure_ascii=False)),
            )
            self._db.execute(
                "DELETE FROM message_files WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
            )
            for stored in files:
                self._db.execute(
                    "INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?)",
                    (stored.file_id, stored.file_unique_id, stored.file_path, _digest(stored.data)),
                )
                self._db.execute(
                    "INSERT OR IGNORE INTO message_files VALUES (?, ?, ?)",
                    (chat_id, message_id, stored.file_id),
                )

    def _set_language(self, user_id: int, language: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO languages VALUES (?, ?)", (user_id, language))

    def _keep_bytes(self, stored: StoredFile) -> None:
        """Write a file's bytes once under their hash (the same photo sent twice is stored once)."""
        target = self.files_dir / _digest(stored.data)
        if target.exists():
            return
        partial = target.with_suffix(".partial")
        partial.write_bytes(stored.data)
        os.replace(partial, target)

    def _clear(self, chat_id: int, where: str, args: tuple) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for table in ("messages", "message_files"):
                self._db.execute(f"DELETE FROM {table} WHERE chat_id = ? AND {where}", (chat_id, *args))
        self._drop_unshown_files()

    def _drop_unshown_files(self) -> None:
        """Forget the files no message shows any more, and their bytes once no file has them."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM files WHERE file_id NOT IN (SELECT file_id FROM message_files)")
            kept = {digest for (digest,) in self._db.execute("SELECT sha256 FROM files")}
        for path in self.files_dir.iterdir():
            if path.name not in kept:
                path.unlink(missing_ok=True)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _log_failure(future: concurrent.futures.Future) -> None:
    error = future.exception()
    if error is not None:
        logger.error("playground history: a change was not saved", exc_info=error)
