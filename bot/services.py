"""What handlers need, in one object kept in `application.bot_data` (never in module globals)."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from telegram import CallbackQuery, Message, Update
from telegram.ext import ContextTypes

from bot.limits import FloodLimiter
from bot.texts import language
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from inference.taught import Taught, is_taught, with_taught

if TYPE_CHECKING:
    from bot.config import BotConfig, RetrainConfig
    from inference.model_store import ModelStore
    from inference.photo_classifier import PhotoClassifier
    from storage.database import Store
    from storage.images import ImageStore


class PhotoFeatures(Protocol):
    """Computes a taught photo's backbone features when it arrives (training.taught_features)."""

    def note(self, sha256: str, path: Path) -> None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


KEY = "services"
# What one lock guards: ("prediction", id), ("user", id), ("rollback", model name).
LockKey = tuple[str, int | str]


@dataclass
class Services:
    config: BotConfig
    retrain: RetrainConfig
    classifier: PhotoClassifier  # in this process, or the inference service (INFERENCE_URL)
    store: Store
    images: ImageStore
    model_store: ModelStore
    limiter: FloodLimiter
    # The models this bot serves, with each one's labels as its serving version names them.
    catalogue: Catalogue = DEFAULT_CATALOGUE
    features: PhotoFeatures | None = None  # a taught photo's features, cached when it arrives
    _modes: dict[int, str] = field(default_factory=dict)  # chat → mode, read through to the store
    _locks: weakref.WeakValueDictionary[LockKey, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def lock(self, key: LockKey) -> asyncio.Lock:
        """One lock per key (a prediction, a user), alive while someone holds or waits on it.

        asyncio.Lock wakes waiters in arrival order, so taps on one prediction are handled in order
        even though updates are processed concurrently.
        """
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def chat_mode(self, chat_id: int) -> str:
        """The chat's mode; cached, since every photo needs it and only /digit, /flower, /auto change it."""
        if chat_id not in self._modes:
            if len(self._modes) > 100_000:
                self._modes.clear()
            self._modes[chat_id] = await self.store.chat_mode(chat_id)
        return self._modes[chat_id]

    async def set_chat_mode(self, chat_id: int, mode: str) -> None:
        await self.store.set_chat_mode(chat_id, mode)
        self._modes[chat_id] = mode

    def forget_chat(self, chat_id: int) -> None:
        self._modes.pop(chat_id, None)

    async def refresh_taught(self) -> None:
        """Merge the taught models of the database into the catalogue, and serve the new ones, at the
        start and after every /newmodel, /addlabel, /dellabel and /delmodel."""
        rows = await self.store.taught_models()
        live = {row.name: row for row in rows}
        for spec in list(self.catalogue):
            if is_taught(spec) and spec.name not in live:
                await self.classifier.remove_model(spec.name)
        catalogue = Catalogue(spec for spec in self.catalogue if not is_taught(spec))
        self.catalogue = with_taught(
            catalogue,
            (Taught(row.name, [(label.name, label.display) for label in row.labels]) for row in rows),
        )
        for name in live:
            if name in self.catalogue:
                await self.classifier.add_model(self.catalogue[name])

    def refresh_labels(self) -> None:
        """Take each model's labels from its serving version's meta.json (the catalogue's otherwise).

        A taught model keeps the database's labels: a label just added must be accepted in captions
        before any version knows it."""
        for name in self.catalogue.names:
            if is_taught(self.catalogue[name]):
                continue
            try:
                version = self.model_store.active(name)
            except Exception:  # an unreadable meta.json must not stop the bot; the catalogue's serve
                version = None
            if version is not None and version.labels:
                self.catalogue = self.catalogue.with_labels(name, version.labels)

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.config.admin_ids


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.application.bot_data[KEY]


def lang(update: Update) -> str:
    user = update.effective_user
    return language(user.language_code if user else None)


def accessible_message(query: CallbackQuery) -> Message | None:
    """The message under a pressed button, if the bot may still read and edit it (Telegram sends an
    inaccessible one, with date 0, when it is too old)."""
    message = query.message
    return message if isinstance(message, Message) and message.is_accessible else None
